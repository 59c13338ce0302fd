import io

from rich.console import Console

from dvbench.harness.progress import RichProgress


def test_nested_tasks_share_one_display_and_report_rates():
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=120))
    with progress.task("valuation", total=2, unit="valuators") as outer:
        for _ in range(2):
            with progress.task("pairs", total=10, unit="pairs") as inner:
                inner(4)
                inner(6)
            outer(1)
    assert progress._live is None
    text = out.getvalue()
    assert "valuation" in text and "pairs" in text and "2/2" in text and "10/10" in text
