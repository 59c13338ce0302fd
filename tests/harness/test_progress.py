import io
import re

from rich.console import Console

from dvbench.harness.progress import LineProgress, Meter, RichProgress, clock, reporter

LINE = re.compile(r"\[\d+:\d\d:\d\d\] [^\[\r\x1b]*")  # one event: a timestamp, text, no escape codes


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _stage(progress, now: Clock):
    with progress.task("training", total=3, unit="models") as models:
        for name in ("icp >0.8", "random >0.8"):
            models(0, name)
            progress.note(f"models/{name}: training again")
            with progress.task("fine-tune", total=4, unit="steps") as steps:
                for _ in range(4):
                    now.t += 5
                    steps(1, "loss 1.234")
            models(1)


def test_nested_tasks_share_one_display_and_leave_one_line_per_stage():
    out, now = io.StringIO(), Clock()
    progress = RichProgress(Console(file=out, force_terminal=True, width=120), now=now)
    _stage(progress, now)
    assert progress._live is None
    text = out.getvalue()
    assert "training again" in text and "fine-tune" in text and "random >0.8" in text
    assert "training: 2/3 models in 0:00:40, 20.0 s/model" in text


def test_a_log_file_gets_whole_lines_one_per_event():
    out, now = io.StringIO(), Clock()
    _stage(LineProgress(out, every=10, now=now), now)
    lines = out.getvalue().splitlines()
    assert all(LINE.fullmatch(line) for line in lines), lines
    assert lines[0] == "[0:00:00] training: 3 models"
    assert lines[-1] == "[0:00:40] training: 2/3 models in 0:00:40, 20.0 s/model"
    # what is being done (the valuator and bin), the rate in its unit and the time left, stage by stage
    assert "[0:00:30] training 1/3 models, 30.0 s/model, ETA 0:01:00, random >0.8 › fine-tune 2/4 steps, " \
           "5.0 s/step, ETA 0:00:10, loss 1.234" in lines
    assert sum("training again" in line for line in lines) == 2
    assert len(lines) == 2 + 2 + 5  # start, end, two notices, one line per 10 s (from the first)


def test_rates_read_per_item_or_per_second_and_times_are_never_cut():
    assert Meter("x", 10, "pairs", started=0, done=5, now=2).rate() == "2.5 pairs/s"
    assert Meter("x", 10, "models", started=0, done=2, now=50).rate() == "25.0 s/model"
    assert Meter("x", 10, "models", started=0, done=2, now=0.5).rate() == ""  # a blink: no rate
    assert clock(3 * 3600 + 5 * 60 + 7) == "3:05:07" and clock(36 * 3600) == "36:00:00"


def test_the_display_follows_the_stream():
    assert isinstance(reporter(Console(file=io.StringIO())), LineProgress)
    assert isinstance(reporter(Console(file=io.StringIO(), force_terminal=True)), RichProgress)


def test_the_runs_time_left_counts_the_stages_to_come_at_the_pace_of_the_stage_they_are_like():
    out, now = io.StringIO(), Clock()
    progress = LineProgress(out, every=0, now=now)
    progress.expect("training", 4)
    progress.expect("retraining", 3, like="training")
    progress.expect("evaluation", None)  # not known yet: the time left is a lower bound
    with progress.task("training", 4, "models") as advance:
        now.t += 10
        advance(2)
        progress.expect("evaluation", 8)  # known now, its pace not yet
        now.t += 10
        advance(1)
    with progress.task("retraining", 3, "models") as advance:
        now.t += 12
        advance(1)
    lines = out.getvalue().splitlines()
    # 2 models left at 5 s, 3 retrains at the training's 5 s, evaluation unknown
    assert lines[1] == "[0:00:10] training 2/4 models, 5.0 s/model, ETA 0:00:10; run ETA ≥ 0:00:25"
    assert lines[2] == "[0:00:20] training 3/4 models, 6.7 s/model, ETA 0:00:07; run ETA ≥ 0:00:27"
    # training done at 20 s / 3 = 6.7 s per model; retraining's own pace (12 s) for its 2 left
    assert lines[5] == "[0:00:32] retraining 1/3 models, 12.0 s/model, ETA 0:00:24; run ETA ≥ 0:00:24"


def test_an_advance_pickled_to_a_worker_is_replayed_on_the_display():
    import pickle

    from dvbench.harness import progress as module
    from dvbench.harness.progress import RELAYED, Progress, Relayed, replay

    out, now = io.StringIO(), Clock()
    display = LineProgress(out, every=0, now=now)
    assert type(pickle.loads(pickle.dumps(display))) is Progress  # a worker's copy shows nothing
    with display.task("icp", total=10, unit="pairs") as advance:
        travelled = pickle.loads(pickle.dumps(advance))
        assert isinstance(travelled, Relayed)
        RELAYED.clear()
        travelled(3)
        travelled(4, "shard 2")
        calls = list(RELAYED)
        assert display._open[0].done == 0  # nothing moves here until the calls come back
        now.t += 2
        replay(calls)
        assert (display._open[0].done, display._open[0].note) == (7, "shard 2")
    replay(calls)  # the task has closed: its late calls are dropped
    assert "icp 7/10 pairs" in out.getvalue() and advance.token not in module._TASKS


def test_the_workers_alive_show_beside_the_outermost_task_while_units_run():
    out, now = io.StringIO(), Clock()
    display = LineProgress(out, every=0, now=now)
    with display.task("training", total=4, unit="models") as models:
        with display.task("fine-tune", total=2, unit="steps") as steps:
            display.workers(2, 2)
            now.t += 2
            models(1)
            display.workers(1, 2)  # one died: being restarted
            steps(1)
            display.workers(None, 2)  # the executor's units are done
            steps(1)
    lines = [line for line in out.getvalue().splitlines() if "›" in line]
    assert lines[0] == "[0:00:00] training 0/4 models, 2/2 workers › fine-tune 0/2 steps"
    assert lines[1] == "[0:00:02] training 1/4 models, 2.0 s/model, ETA 0:00:06, 2/2 workers › fine-tune 0/2 steps"
    assert lines[2].startswith("[0:00:02] training 1/4 models") and ", 1/2 workers › " in lines[2]
    assert "workers" not in "".join(lines[4:])
    terminal = RichProgress(Console(file=io.StringIO(), force_terminal=True, width=160), now=now)
    with terminal.task("evaluation", total=3, unit="evaluations"):
        terminal.workers(3, 4)
        assert terminal._fields(terminal._open[0])["run"] == "3/4 workers"
        terminal.workers(None, 4)
        assert terminal._fields(terminal._open[0])["run"] == ""
