"""The report's figures, drawn with matplotlib (Agg, no screen) and saved as PNG and PDF: the PNG
goes into the page, both lie beside it for papers.

- :func:`background_bars`: accuracy per background with 95 % bootstrap intervals;
- :func:`class_background_heatmap`: accuracy per class x background of one model;
- :func:`size_curve` and :func:`position_heatmaps`: ForAug's size and center bias (Nauen et
  al. 2025), accuracy per scale with 95 % intervals and per grid cell, every model;
  :func:`ratio_bars`: its foreground focus (and any ratio), one bar per model;
- :func:`robustness_plot`: shifted vs in-distribution accuracy on logit axes (Taori et al.
  2020), the fitted family's line (ImageNet-G's real-only family where there is one; Bansal &
  Grover 2023), y = x, and every model as a numbered marker coloured by its family, so that
  twenty models stay readable (the numbers key the table beside it).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 150  # the PNGs' resolution; the page shows them at 96 px per inch
MAX_WIDTH = 10.0  # inches: the widest figure, about the page's width
FAMILY_STYLE = {  # ImageNet-G's three training sets, and models of no sweep
    "real": ("#1f77b4", "o"),
    "generated": ("#d62728", "s"),
    "real+generated": ("#2ca02c", "D"),
    None: ("#444444", "^"),
}
OTHER_STYLE = ("#9467bd", "v")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "pdf.fonttype": 42})  # fmt: skip  # TrueType text in the PDF
    return plt


def save(fig: Any, folder: Path, name: str) -> bytes:
    """Write ``folder/name.png`` and ``folder/name.pdf``; returns the PNG's bytes."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    (folder / f"{name}.png").write_bytes(buf.getvalue())
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def background_bars(
    backgrounds: Sequence[str], series: dict[str, list[tuple[float | None, Any]]]
) -> Any:
    """Grouped bars: ``series[model][i] = (accuracy, (lo, hi) or None)`` on background i."""
    plt = _pyplot()
    fig_width = min(MAX_WIDTH, max(5.0, 0.35 * len(backgrounds) * max(1, len(series)) + 1.5))
    fig, ax = plt.subplots(figsize=(fig_width, 3.2))
    width = 0.8 / max(1, len(series))
    for j, (name, values) in enumerate(series.items()):
        xs = np.arange(len(backgrounds)) + (j - (len(series) - 1) / 2) * width
        acc = np.array([np.nan if v is None else 100 * v for v, _ in values])
        err = np.array(
            [[0, 0] if ci is None or v is None else [100 * (v - ci[0]), 100 * (ci[1] - v)]
             for v, ci in values]
        ).T  # fmt: skip
        ax.bar(xs, acc, width, yerr=err, capsize=2, label=name, error_kw={"lw": 0.8})
    ax.set_xticks(np.arange(len(backgrounds)), backgrounds, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    # below the axes, outside the bars, in columns that fit the figure's width
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=max(1, min(len(series), int(fig_width // 2.5))))  # fmt: skip
    return fig


def class_background_heatmap(
    title: str, classes: Sequence[str], backgrounds: Sequence[str], matrix: dict[str, Any]
) -> Any:
    """Accuracy (%) of each class (rows) on each background (columns); blank: no images."""
    plt = _pyplot()
    values = np.array([[np.nan if matrix.get(c, {}).get(b) is None else 100 * matrix[c][b]
                        for b in backgrounds] for c in classes])  # fmt: skip
    fig, ax = plt.subplots(figsize=(0.42 * len(backgrounds) + 1.6, 0.32 * len(classes) + 1.0))
    ax.imshow(values, cmap="Greens", vmin=0, vmax=100, aspect="auto")
    for i in range(len(classes)):
        for j in range(len(backgrounds)):
            if not np.isnan(values[i, j]):
                colour = "white" if values[i, j] > 60 else "black"
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color=colour)  # fmt: skip
    ax.set_xticks(range(len(backgrounds)), backgrounds, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_title(title, fontsize=9)
    return fig


def _clip(a: Sequence[float]) -> np.ndarray:
    return np.clip(np.asarray(a, np.float64), 0.005, 0.995)  # logit axes hold no 0 or 1


def robustness_plot(er: dict[str, Any], title: str = "") -> Any:
    """``er``: an audit record's ``effective_robustness`` (every model's accuracies, families
    and the logit fit). Points are numbered 1..N in ``er["models"]`` order."""
    plt = _pyplot()
    x, y = _clip(er["acc_id"]), _clip(er["acc_shift"])
    families = er.get("families") or [None] * len(x)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    lo, hi = min(x.min(), y.min()) * 0.8, min(0.995, max(x.max(), y.max()) + 0.1)
    grid = np.linspace(lo, hi, 100)
    ax.plot(grid, grid, ls="--", color="#999", lw=0.8, label="y = x")
    fit = er["logit"]
    line = 1 / (1 + np.exp(-(fit["slope"] * np.log(grid / (1 - grid)) + fit["intercept"])))
    fitted = "real-only family" if er.get("fit_on") == "real" else "all models"
    ax.plot(grid, line, color="#1f77b4", lw=1.2, label=f"logit fit on {fitted}")
    seen = set()
    for i, (a, b, fam) in enumerate(zip(x, y, families, strict=True)):
        colour, marker = FAMILY_STYLE.get(fam, OTHER_STYLE)
        label = None if fam in seen else (fam or "other models")
        seen.add(fam)
        ax.scatter(a, b, s=34, color=colour, marker=marker, label=label, zorder=3,
                   edgecolors="white", linewidths=0.5)  # fmt: skip
        ax.annotate(str(i + 1), (a, b), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ticks = [
        t for t in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99) if lo <= t <= hi
    ]
    ax.set_xticks(ticks, [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(ticks, [f"{100 * t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("in-distribution accuracy (%)")
    ax.set_ylabel("shifted accuracy (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return fig


def size_curve(series: dict[str, list[tuple[float, float | None, Any]]]) -> Any:
    """Accuracy by object scale: ``series[model] = [(scale, accuracy, (lo, hi) or None)]``,
    one line with 95 % error bars per model, slightly staggered so that the bars stay apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    scales = sorted({s for values in series.values() for s, _, _ in values})
    step = min((b - a for a, b in itertools.pairwise(scales)), default=0.1)
    for j, (name, values) in enumerate(series.items()):
        shift = (j - (len(series) - 1) / 2) * 0.06 * step
        xs = np.array([s for s, _, _ in values]) + shift
        acc = np.array([np.nan if v is None else 100 * v for _, v, _ in values])
        err = np.array(
            [[0, 0] if ci is None or v is None else [100 * (v - ci[0]), 100 * (ci[1] - v)]
             for _, v, ci in values]
        ).T  # fmt: skip
        ax.errorbar(xs, acc, yerr=err, marker="o", ms=4, lw=1.2, capsize=2, label=name,
                    elinewidth=0.8)  # fmt: skip
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.set_ylim(0, 100)
    ax.set_xlabel("object side / image side")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def position_heatmaps(
    grids: dict[str, tuple[int, list[dict[str, Any]], list[list[int]]]],
) -> Any:
    """Accuracy (%) per cell of the K x K grid where the object was centred, one panel per
    model: ``grids[model] = (K, [{"row", "col", "acc"}, ...], centre cells [[row, col]])``;
    the centre is framed; blank: no images."""
    plt = _pyplot()
    n = max(1, len(grids))
    cols = min(n, 4)
    lines = -(-n // cols)
    k_max = max((g[0] for g in grids.values()), default=3)
    panel = 0.38 * k_max + 0.9
    fig, axes = plt.subplots(lines, cols, figsize=(cols * panel + 0.8, lines * (panel + 0.3)),
                             squeeze=False)  # fmt: skip
    image = None
    for ax, (name, (k, cells, centre)) in zip(axes.flat, grids.items(), strict=False):
        values = np.full((k, k), np.nan)
        for c in cells:
            if c.get("acc") is not None:
                values[c["row"], c["col"]] = 100 * c["acc"]
        image = ax.imshow(values, cmap="Greens", vmin=0, vmax=100)
        for i in range(k):
            for j in range(k):
                if not np.isnan(values[i, j]):
                    colour = "white" if values[i, j] > 60 else "black"
                    ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color=colour)  # fmt: skip
        if centre:
            ys, xs = [r for r, _ in centre], [c for _, c in centre]
            ax.add_patch(plt.Rectangle((min(xs) - 0.5, min(ys) - 0.5),
                                       max(xs) - min(xs) + 1, max(ys) - min(ys) + 1,
                                       fill=False, lw=1.5, ec="black"))  # fmt: skip
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color("#999")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name if len(name) <= 28 else "…" + name[-27:], fontsize=8)
    for ax in list(axes.flat)[len(grids) :]:
        ax.axis("off")
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.04)
        bar.set_label("accuracy (%)", fontsize=8)
    return fig


def ratio_bars(values: dict[str, tuple[float | None, Any]], label: str) -> Any:
    """One horizontal bar per model: ``values[model] = (ratio, (lo, hi) or None)``, with its
    95 % interval and a line at 1 (no preference)."""
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(5.0, 0.32 * len(names) + 1.0))
    ys = np.arange(len(names))
    ratio = np.array([np.nan if v is None else v for v, _ in values.values()])
    err = np.array(
        [[0, 0] if ci is None or v is None else [v - ci[0], ci[1] - v]
         for v, ci in values.values()]
    ).T  # fmt: skip
    ax.barh(ys, ratio, 0.6, xerr=err, capsize=2, color="#4c72b0", error_kw={"lw": 0.8})
    ax.axvline(1.0, color="#999", lw=0.8, ls="--")
    ax.set_yticks(ys, [n if len(n) <= 36 else "…" + n[-35:] for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    return fig
