"""``dreamshift report``: one self-contained HTML page from ``results.jsonl`` files.

Per dataset and split it shows the audit table, accuracy by background (with 95 % bootstrap
intervals), the class x background accuracy heatmap of each model, the effective-robustness
scatter with its linear and logit fits (Taori et al. 2020), and a grid of sample images with
each model's prediction, wrong ones framed in red. For ``dreamshift learn`` results it shows
the spurious-task table (accuracy and worst-group accuracy per split, per run) and the probe
matrix of every probed run. Plots are inline SVG and images inline PNG, so the file can be
mailed or archived alone.

>>> import tempfile
>>> from dreamshift.audit.evaluate import AuditConfig, audit
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> from dreamshift.compose.runner import compose
>>> tmp = tempfile.mkdtemp()
>>> recipe = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=2, anti_per_group=0)
>>> world = ComposeConfig(classes=("cat", "zebra"), background_names=("grass", "snow"),
...                       size=32, recipe=recipe)
>>> _ = compose(world, f"{tmp}/world", progress=False)
>>> cfg = AuditConfig(models=("world-cnn",), bootstrap=10)
>>> _ = audit(cfg, f"{tmp}/world", f"{tmp}/results.jsonl", log=lambda line: None)
>>> page = write_report([f"{tmp}/results.jsonl"], f"{tmp}/report.html")
>>> "Accuracy by background" in page.read_text()
True
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dreamshift import metrics as M
from dreamshift.engine.results import read_records
from dreamshift.errors import DreamshiftError
from dreamshift.report.tables import (
    format_learn_table,
    format_probe_table,
    format_table,
    read_predictions,
    read_probes,
)

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _esc(x: object) -> str:
    return html.escape(str(x))


def bar_chart(categories: Sequence[str], series: dict[str, list[tuple[float | None, Any]]]) -> str:
    """Grouped bars in [0, 1]: ``series[name][i] = (value, (lo, hi) or None)`` for category i."""
    w, h, left, bottom, top = max(420, 60 * len(categories) + 60), 260, 40, 40, 24
    plot_h = h - bottom - top
    group_w = (w - left - 10) / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    parts = [f'<svg class="plot" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - t)
        parts.append(
            f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{100 * t:.0f}</text>'
        )
    for i, c in enumerate(categories):
        x0 = left + i * group_w + group_w * 0.1
        parts.append(
            f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{h - bottom + 16}" '
            f'text-anchor="middle">{_esc(c)}</text>'
        )
        for j, (name, values) in enumerate(series.items()):
            v, ci = values[i]
            if v is None:
                continue
            x = x0 + j * bar_w
            y = top + plot_h * (1 - v)
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}" '
                f'height="{plot_h * v:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{_esc(name)} {_esc(c)}: {100 * v:.1f} %</title></rect>"
            )
            if ci:
                cx, y_lo, y_hi = (
                    x + bar_w / 2,
                    top + plot_h * (1 - ci[0]),
                    top + plot_h * (1 - ci[1]),
                )
                parts.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y_lo:.1f}" y2="{y_hi:.1f}" '
                    'stroke="#000"/>'
                )
    parts.append(_legend(list(series), left + 4, 4))
    return "".join(parts) + "</svg>"


def _legend(names: Sequence[str], x: float, y: float) -> str:
    out = []
    for j, name in enumerate(names):
        out.append(
            f'<rect x="{x}" y="{y + 14 * j}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{x + 14}" y="{y + 9 + 14 * j}">'
            f"{_esc(name)}</text>"
        )
    return "".join(out)


def heatmap(rows: Sequence[str], cols: Sequence[str], values: dict[str, dict[str, Any]]) -> str:
    """Accuracy of each (row, column) cell, white (0) to green (1); empty cells grey."""
    cell, left, top = 34, 70, 60
    w, h = left + cell * len(cols) + 4, top + cell * len(rows) + 4
    parts = [
        f'<svg class="plot heatmap" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for j, c in enumerate(cols):
        x = left + j * cell + cell / 2
        parts.append(f'<text transform="translate({x:.0f},{top - 4}) rotate(-45)">{_esc(c)}</text>')
    for i, r in enumerate(rows):
        y = top + i * cell
        parts.append(
            f'<text x="{left - 4}" y="{y + cell / 2 + 4:.0f}" text-anchor="end">{_esc(r)}</text>'
        )
        for j, c in enumerate(cols):
            v = values.get(r, {}).get(c)
            if v is None:
                fill, label = "#ccc", ""
            else:
                g = int(255 - 155 * v)
                fill, label = f"rgb({g},{int(255 - 80 * v)},{g})", f"{100 * v:.0f}"
            parts.append(
                f'<rect class="cell" x="{left + j * cell}" y="{y}" width="{cell - 1}" '
                f'height="{cell - 1}" fill="{fill}"><title>{_esc(r)} / {_esc(c)}: {label}'
                f'</title></rect><text x="{left + j * cell + cell / 2:.0f}" '
                f'y="{y + cell / 2 + 4:.0f}" text-anchor="middle">{label}</text>'
            )
    return "".join(parts) + "</svg>"


def robustness_scatter(
    names: Sequence[str], acc_id: Sequence[float], acc_shift: Sequence[float]
) -> str:
    """Shifted vs in-distribution accuracy per model, y = x, and the linear and logit fits."""
    w = h = 300
    pad = 40
    lo = max(0.0, min(*acc_id, *acc_shift) - 0.1)
    span = 1.0 - lo

    def px(a: float) -> float:
        return pad + (a - lo) / span * (w - pad - 10)

    def py(a: float) -> float:
        return h - pad - (a - lo) / span * (h - pad - 10)

    parts = [
        f'<svg class="plot scatter" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(1):.1f}" y2="{py(1):.1f}" '
        'stroke="#aaa" stroke-dasharray="4"/>',
        f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">in-distribution accuracy</text>',
        f'<text transform="translate(12,{h / 2}) rotate(-90)" text-anchor="middle">shifted '
        "accuracy</text>",
    ]
    if len(acc_id) >= 3 and len(set(acc_id)) >= 2:  # a line through two points says nothing
        xs = np.linspace(lo, 0.999, 50)
        for space, colour in (("linear", "#1f77b4"), ("logit", "#d62728")):
            fit = M.fit_effective_robustness(acc_id, acc_shift, space)
            ys = np.clip(fit.predict(xs), lo, 1.0)
            pts = " ".join(
                f"{px(float(a)):.1f},{py(float(b)):.1f}" for a, b in zip(xs, ys, strict=True)
            )
            parts.append(
                f'<polyline class="fit" points="{pts}" fill="none" stroke="{colour}">'
                f"<title>{space} fit: slope {fit.slope:.2f}, intercept "
                f"{fit.intercept:.2f}</title></polyline>"
            )
    for name, a, b in zip(names, acc_id, acc_shift, strict=True):
        parts.append(
            f'<circle class="model" cx="{px(a):.1f}" cy="{py(b):.1f}" r="4" fill="#000">'
            f"<title>{_esc(name)}: {100 * a:.1f} -> {100 * b:.1f}</title></circle>"
            f'<text x="{px(a) + 6:.1f}" y="{py(b) - 6:.1f}">{_esc(name)}</text>'
        )
    return "".join(parts) + "</svg>"


def sample_grid(record: dict[str, Any], classes: Sequence[str], cell: int = 56) -> str:
    """An ``<img>`` of one image per (class, background) — rows are classes, columns
    backgrounds — with the model's prediction under it; a red frame marks a wrong one."""
    preds = read_predictions(record)
    root = Path(record["dataset"])
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for p in preds:
        chosen.setdefault((p["fg_class"], p["bg_class"]), p)
    bgs = [b for b in record["per_background"] if any(k[1] == b for k in chosen)]
    label, left, top = 12, 64, 14
    sheet = Image.new(
        "RGB", (left + len(bgs) * (cell + 4), top + len(classes) * (cell + label + 4)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for j, b in enumerate(bgs):
        draw.text((left + j * (cell + 4) + 2, 1), b[:9], fill=(0, 0, 0))
    for i, c in enumerate(classes):
        draw.text((2, top + i * (cell + label + 4) + cell // 2 - 5), c[:10], fill=(0, 0, 0))
        for j, b in enumerate(bgs):
            if (c, b) not in chosen:
                continue
            p = chosen[c, b]
            x, y = left + j * (cell + 4), top + i * (cell + label + 4)
            try:
                with Image.open(root / p["path"]) as img:
                    sheet.paste(img.convert("RGB").resize((cell, cell)), (x + 2, y + 2))
            except OSError:
                draw.rectangle((x + 2, y + 2, x + cell + 1, y + cell + 1), fill=(200, 200, 200))
            wrong = p["predicted"] != p["fg_class"]
            if wrong:
                draw.rectangle((x, y, x + cell + 3, y + cell + 3), outline=(220, 0, 0), width=2)
            draw.text(
                (x + 2, y + cell + 3),
                str(p["predicted"])[:9],
                fill=(220, 0, 0) if wrong else (0, 0, 0),
            )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return (
        f'<img class="samples" alt="samples of {_esc(record["model"])}" '
        f'src="data:image/png;base64,{data}">'
    )


def _latest(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out[r["model"]] = r
    return list(out.values())


def learn_section(records: Sequence[dict[str, Any]]) -> list[str]:
    """HTML of learn runs: the task table per training dataset and each run's probe matrices.
    Records carry ``folder``, their run folder (added by :func:`write_report`)."""
    body = ["<h2>Learn runs</h2>"]
    latest = list({r["folder"]: r for r in records}.values())
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for r in latest:
        by_dataset.setdefault(r["dataset"], []).append(r)
    for dataset, recs in by_dataset.items():
        body.append(f"<h3>Trained on {_esc(dataset)}</h3>")
        body.append(f"<pre>{_esc(format_learn_table(recs))}</pre>")
    for r in latest:
        for p in read_probes(r["folder"]):
            body.append(
                f"<h3>Probes of {_esc(r['run'])} (train {_esc(p['train_split'])}, test "
                f"{_esc(p['test_split'])} of {_esc(p['dataset'])})</h3>"
                f"<pre>{_esc(format_probe_table(p['matrix']))}</pre>"
            )
    return body


def render(records: Sequence[dict[str, Any]]) -> str:
    """The report page of ``records``: audit records (the latest per model, per dataset and
    split) and learn records (those with a ``run``)."""
    families: dict[tuple[str, str], list[dict[str, Any]]] = {}
    learned = [r for r in records if "run" in r]
    for r in records:
        if "run" not in r:
            families.setdefault((r["dataset"], r["split"]), []).append(r)
    body = learn_section(learned) if learned else []
    for (dataset, split), recs in families.items():
        recs = _latest(recs)
        body.append(f"<h2>{_esc(dataset)} — split {_esc(split or 'all')}</h2>")
        body.append(f"<pre>{_esc(format_table(recs))}</pre>")
        bgs = list(dict.fromkeys(b for r in recs for b in r["per_background"]))
        series = {
            r["model"]: [
                (
                    r["per_background"].get(b, {}).get("acc"),
                    r["per_background"].get(b, {}).get("ci"),
                )
                for b in bgs
            ]
            for r in recs
        }
        body.append("<h3>Accuracy by background</h3>" + bar_chart(bgs, series))
        body.append("<h3>Accuracy per class × background</h3>")
        for r in recs:
            classes = list(r["matrix"])
            body.append(
                f"<figure><figcaption>{_esc(r['model'])}</figcaption>"
                f"{heatmap(classes, bgs, r['matrix'])}</figure>"
            )
        with_id = [r for r in recs if r.get("acc_id") is not None and r.get("acc_avg") is not None]
        references = {json.dumps(r["in_distribution"], sort_keys=True) for r in with_id}
        if len(with_id) >= 2 and len(references) == 1:  # one in-distribution reference only
            body.append(
                "<h3>Effective robustness</h3>"
                + robustness_scatter(
                    [r["model"] for r in with_id],
                    [r["acc_id"] for r in with_id],
                    [r["acc_avg"] for r in with_id],
                )
            )
        body.append("<h3>Samples and predictions (wrong ones framed red)</h3>")
        for r in recs:
            try:
                grid = sample_grid(r, list(r["matrix"]))
            except DreamshiftError as exc:
                grid = f"<p>{_esc(exc)}</p>"
            body.append(f"<figure><figcaption>{_esc(r['model'])}</figcaption>{grid}</figure>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}svg text{font-size:11px}"
        "figure{display:inline-block;margin:0 1em 1em 0}pre{background:#f6f6f6;padding:1em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>dreamshift report"
        f"</title><style>{style}</style></head><body><h1>dreamshift report</h1>"
        f"{''.join(body)}</body></html>\n"
    )


def write_report(results: Sequence[str | Path], out: str | Path) -> Path:
    """Write the report of one or more ``results.jsonl`` files to ``out``."""
    records = []
    for path in results:
        for r in read_records(path):
            if "run" in r:  # a learn run: its folder sits next to results.jsonl
                r["folder"] = str(Path(path).parent / r["run"])
            records.append(r)
    if not records:
        raise DreamshiftError(f"{', '.join(map(str, results))} holds no records")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(records), encoding="utf-8")
    tmp.replace(out)
    return out
