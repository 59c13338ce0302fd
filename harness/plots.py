"""PNG plots of a run, drawn from its saved artifacts only, so ``dvbench leaderboard DIR`` draws
them again without recomputing anything:

- ``leaderboard/plots/spearman.png``: Spearman's rho between every pair of valuators, a heatmap;
- ``leaderboard/plots/scatter.png``: two valuators' scores, one point per candidate (the paper's
  Figure 1a), with their rho;
- ``leaderboard/plots/overlap.png``: the top-q overlap of every pair of valuators against q, in
  percent of the pool (Figure 1c), beside the overlap two random rankings share on average (q);
- ``leaderboard/plots/lds.png`` (when ``leaderboard/lds.parquet`` exists): LDS per valuator with
  its interval's whiskers, per-anchor LDS as dots and global LDS as squares;
- ``leaderboard/plots/removal.png`` (when ``leaderboard/removal.parquet`` exists): each
  valuator's removal effect against q with its interval, over the random removals' band
  (``random_low − random_mean`` .. ``random_high − random_mean``: the spread of one random removal).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from dvbench.harness import leaderboard
from dvbench.harness.artifacts import write_atomic

PERCENTILES = np.arange(1, 101) / 100


def render(folder: Path, scatter: list[str] | None = None) -> list[Path]:
    """Draw every plot the saved leaderboard allows into ``folder/leaderboard/plots``; returns
    the files written. ``scatter``: the two valuator labels to plot (default: the first pair)."""
    import matplotlib

    matplotlib.use("Agg")
    spearman = pl.read_parquet(folder / "leaderboard" / "spearman.parquet")
    labels = list(dict.fromkeys(spearman["a"].to_list() + spearman["b"].to_list()))
    if len(labels) < 2:
        return []
    scores = pl.DataFrame({"candidate_id": pl.read_parquet(folder / "scores" / f"{labels[0]}.parquet")["candidate_id"]})
    for label in labels:
        scores = scores.with_columns(pl.read_parquet(folder / "scores" / f"{label}.parquet")["score"].alias(label))
    plots = folder / "leaderboard" / "plots"
    pair = scatter or labels[:2]
    drawn = [_heatmap(plots / "spearman.png", spearman, labels),
             _scatter(plots / "scatter.png", scores, pair, spearman),
             _overlap(plots / "overlap.png", leaderboard.overlap(scores, PERCENTILES.tolist(), B=0))]
    for name, draw in (("lds", _lds), ("removal", _removal)):
        if (folder / "leaderboard" / f"{name}.parquet").is_file():
            drawn.append(draw(plots / f"{name}.png", pl.read_parquet(folder / "leaderboard" / f"{name}.parquet")))
    return drawn


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, metadata={"Software": None}))
    plt.close(figure)
    return path


def _heatmap(path: Path, spearman: pl.DataFrame, labels: list[str]) -> Path:
    import matplotlib.pyplot as plt

    index = {label: i for i, label in enumerate(labels)}
    matrix = np.eye(len(labels))
    for row in spearman.iter_rows(named=True):
        value = np.nan if row["rho"] is None else row["rho"]
        matrix[index[row["a"]], index[row["b"]]] = matrix[index[row["b"]], index[row["a"]]] = value
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1))
    image = axes.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            axes.text(j, i, "—" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}", ha="center", va="center")
    figure.colorbar(image, ax=axes, label="Spearman's rho")
    axes.set_title("Spearman correlation of valuators' scores")
    figure.tight_layout()
    return _save(figure, path)


def _scatter(path: Path, scores: pl.DataFrame, pair: list[str], spearman: pl.DataFrame) -> Path:
    import matplotlib.pyplot as plt

    a, b = pair
    match = spearman.filter(((pl.col("a") == a) & (pl.col("b") == b)) | ((pl.col("a") == b) & (pl.col("b") == a)))
    rho = match["rho"].item() if match.height else None
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(scores[a].to_numpy(), scores[b].to_numpy(), s=4, alpha=0.3, rasterized=True)
    axes.set_xlabel(a)
    axes.set_ylabel(b)
    axes.set_title(f"{a} vs {b}" + ("" if rho is None else f" (Spearman {rho:.3f})"))
    figure.tight_layout()
    return _save(figure, path)


def _overlap(path: Path, overlap: pl.DataFrame) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for (a, b), rows in overlap.group_by(["a", "b"], maintain_order=True):
        axes.plot(rows["q"].to_numpy() * 100, rows["overlap"].to_numpy() * 100, label=f"{a} / {b}")
    axes.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=1, label="random (q)")
    axes.set_xlabel("top q (% of the pool)")
    axes.set_ylabel("overlap (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small")
    axes.set_title("Overlap of the valuators' top-q candidates")
    figure.tight_layout()
    return _save(figure, path)


def _whiskers(values: pl.Series, low: pl.Series, high: pl.Series) -> np.ndarray:
    """Error-bar lengths below and above each value; none where the interval is null."""
    value, low, high = (series.cast(pl.Float64).fill_null(np.nan).to_numpy() for series in (values, low, high))
    return np.nan_to_num(np.vstack([value - low, high - value]), nan=0.0)


def _lds(path: Path, lds: pl.DataFrame) -> Path:
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(lds["valuator"].to_list()))
    figure, axes = plt.subplots(figsize=(1.0 * len(labels) + 3, 4))
    for offset, (kind, marker) in ((-0.12, ("per_anchor", "o")), (0.12, ("global", "s"))):
        rows = lds.filter(pl.col("kind") == kind)
        if rows.height:
            x = np.array([labels.index(label) for label in rows["valuator"]]) + offset
            axes.errorbar(x, rows["lds"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                          yerr=_whiskers(rows["lds"], rows["ci_low"], rows["ci_high"]), fmt=marker, capsize=3,
                          label=f"{kind.replace('_', '-')} LDS")
    axes.axhline(0, color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_ylabel("LDS (Spearman's rho; higher is better)")
    axes.set_ylim(-1, 1)
    axes.legend(fontsize="small")
    axes.set_title("Linear datamodeling score per valuator")
    figure.tight_layout()
    return _save(figure, path)


def _removal(path: Path, removal: pl.DataFrame) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    band = removal.group_by("q", maintain_order=True).first().sort("q")
    q = band["q"].to_numpy() * 100
    axes.fill_between(q, (band["random_low"] - band["random_mean"]).to_numpy(),
                      (band["random_high"] - band["random_mean"]).to_numpy(), color="grey", alpha=0.25,
                      label="random removals")
    axes.axhline(0, color="grey", linestyle="--", linewidth=1)
    for (label,), rows in removal.group_by(["valuator"], maintain_order=True):
        rows = rows.sort("q")
        axes.errorbar(rows["q"].to_numpy() * 100, rows["effect"].to_numpy(),
                      yerr=_whiskers(rows["effect"], rows["ci_low"], rows["ci_high"]), marker="o", capsize=3,
                      label=label)
    axes.set_xlabel("removed top q (% of the pool)")
    axes.set_ylabel("anchors' loss increase over random (nats)")
    axes.legend(fontsize="small")
    axes.set_title("Removal effect (higher is better)")
    figure.tight_layout()
    return _save(figure, path)
