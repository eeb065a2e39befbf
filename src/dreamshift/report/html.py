"""``dreamshift report``: one self-contained HTML page from ``results.jsonl`` files.

Per dataset and split it shows the audit table, accuracy by background (with 95 % bootstrap
intervals), the class x background accuracy heatmap of each model, the effective-robustness
plot with its numbered models and their table (Taori et al. 2020; the real-only family's line
where a sweep made one, Bansal & Grover 2023), ForAug's size and center bias where the dataset
has splits ``size`` / ``position`` (accuracy by object scale, and per grid cell the object was
centred in; Nauen et al. 2025) and its background robustness and foreground focus where the
images have masks, and a grid of sample images with each model's
prediction, wrong ones framed in red. For ``dreamshift learn`` results it shows the
spurious-task table (accuracy and worst-group accuracy per split, per run) and the probe
matrix of every probed run. Tables are HTML tables; figures are drawn with matplotlib
(:mod:`dreamshift.report.figures`) and embedded as PNG, so the page can be mailed or archived
alone, and each is also saved as PNG and PDF in ``<page>_files/`` with the tables as Markdown
(``tables.md``), for papers.

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
>>> sorted({p.stem.split("-world-test")[0] for p in (page.parent / "report_files").iterdir()})
['backgrounds', 'bg-robustness', 'fg-focus', 'heatmap', 'tables']
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from dreamshift import metrics as M
from dreamshift.engine.results import read_records
from dreamshift.errors import DreamshiftError
from dreamshift.report import figures as F
from dreamshift.report.tables import (
    audit_rows,
    background_rows,
    display_names,
    is_numeric,
    learn_rows,
    markdown,
    percent,
    probe_rows,
    read_predictions,
    read_probes,
    size_rows,
)

MAX_DETAILED = 8  # models whose heatmaps and sample grids a section shows


def _esc(x: object) -> str:
    return html.escape(str(x))


def html_table(rows: list[list[str]], css: str = "") -> str:
    """Rows of cells (header first) as an HTML table; numeric columns right-aligned."""
    numeric = [all(is_numeric(r[i]) for r in rows[1:]) for i in range(len(rows[0]))]
    head = "".join(f"<th>{_esc(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if n else "txt"}">{_esc(c)}</td>'
                  for c, n in zip(r, numeric, strict=True))
        + "</tr>"
        for r in rows[1:]
    )  # fmt: skip
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "figure"


class Figures:
    """Saves each figure as PNG and PDF in ``folder`` (beside the page) and returns the
    ``<figure>`` that embeds its PNG and links both files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.names: list[str] = []

    def img(self, fig: Any, name: str, caption: str) -> str:
        name = base = _slug(name)
        while name in self.names:
            name = f"{base}-{len(self.names)}"
        self.names.append(name)
        png = F.save(fig, self.folder, name)
        data = base64.b64encode(png).decode()
        link = _esc(self.folder.name)
        width = int.from_bytes(png[16:20], "big") * 96 // F.DPI  # shown at its size in inches
        return (
            f'<figure><img class="figure" alt="{_esc(caption)}" width="{width}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_esc(caption)} '
            f'(<a href="{link}/{name}.pdf">PDF</a>, <a href="{link}/{name}.png">PNG</a>)'
            "</figcaption></figure>"
        )


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


def learn_section(records: Sequence[dict[str, Any]], md: list[str]) -> list[str]:
    """HTML of learn runs: the task table per training dataset and each run's probe matrices
    (their Markdown is appended to ``md``). Records carry ``folder``, their run folder (added
    by :func:`write_report`)."""
    body = ["<h2>Learn runs</h2>"]
    latest = list({r["folder"]: r for r in records}.values())
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for r in latest:
        by_dataset.setdefault(r.get("dataset_label", r["dataset"]), []).append(r)
    for dataset, recs in by_dataset.items():
        rows = learn_rows(recs)
        body.append(f"<h3>Trained on {_esc(dataset)}</h3>" + html_table(rows, "learn"))
        md += [f"## Learn runs trained on {dataset}", "", markdown(rows), ""]
    for r in latest:
        for p in read_probes(r["folder"]):
            title = (f"Probes of {r['run']} (train {p['train_split']}, test {p['test_split']} "
                     f"of {Path(p['dataset']).name})")  # fmt: skip
            rows = probe_rows(p["matrix"])
            body.append(f"<h3>{_esc(title)}</h3>" + html_table(rows, "probe"))
            md += [f"## {title}", "", markdown(rows), ""]
    return body


def robustness_section(
    recs: Sequence[dict[str, Any]], figures: Figures, title: str, md: list[str]
) -> list[str]:
    """The effective-robustness figure of the largest family among ``recs`` (models audited
    against one in-distribution reference; :func:`dreamshift.metrics.effective_robustness`)
    and its table: the number of each point, the model, its accuracies, its distance from the
    line."""
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for r in recs:  # the models audited against one in-distribution reference: one family
        if r.get("acc_id") is not None:
            key = json.dumps(r.get("in_distribution"), sort_keys=True)
            by_reference.setdefault(key, []).append(r)
    fits = [f for group in by_reference.values() if (f := M.effective_robustness(group))]
    if not fits:
        return []
    er = max(fits, key=lambda f: len(f["models"]))
    families = er.get("families") or [None] * len(er["models"])
    rows = [["#", "model", "family", "in-distribution acc", "shifted acc", "ER (logit fit)"]]
    for i, (m, fam, a, b, e) in enumerate(zip(er["models"], families, er["acc_id"],
                                              er["acc_shift"], er["logit"]["effective_robustness"],
                                              strict=True)):  # fmt: skip
        rows.append([str(i + 1), m, fam or "–", percent(a), percent(b), percent(e)])
    fitted = "the real-only family" if er.get("fit_on") == "real" else "all models"
    md += [f"### Effective robustness, {title} (line fit on {fitted})", "", markdown(rows), ""]
    figure = figures.img(F.robustness_plot(er, title), f"er-{title}",
                         f"effective robustness, {title}")  # fmt: skip
    return [f"<h3>Effective robustness (line fit on {fitted})</h3>",
            f'<div class="er">{figure}{html_table(rows, "er-table")}</div>']  # fmt: skip


def bias_section(
    recs: Sequence[dict[str, Any]], figures: Figures, title: str, md: list[str]
) -> list[str]:
    """ForAug's biases of the records that hold them: accuracy by object scale (one line per
    model, with the table beside it), per grid cell (one panel per model), on the objects'
    home kind of background and on others, and the foreground focus (one bar per model)."""
    body = []
    sized = [r for r in recs if r.get("size_bias")]
    if sized:
        series = {r["model"]: [(b["scale"], b["acc"], b["ci"]) for b in r["size_bias"]["bins"]]
                  for r in sized}  # fmt: skip
        rows = size_rows(sized)
        figure = figures.img(F.size_curve(series), f"size-{title}",
                             f"accuracy by object scale (split size), {title}")  # fmt: skip
        body += ["<h3>Size bias (ForAug): accuracy by object scale</h3>", figure,
                 html_table(rows, "size")]  # fmt: skip
        md += [f"### Accuracy (%) by object scale, {title}", "", markdown(rows), ""]
    placed = [r for r in recs if r.get("center_bias")]
    if placed:
        grids = {}
        for r in placed:
            bias = r["center_bias"]
            grids[r["model"]] = (bias["grid"], bias["cells"], bias["summary"]["center_cells"])
        figure = figures.img(F.position_heatmaps(grids), f"position-{title}",
                             f"accuracy (%) per grid cell the object is centred in (split "
                             f"position; the centre framed), {title}")  # fmt: skip
        body += ["<h3>Center bias (ForAug): accuracy by object position</h3>", figure]
    robust = [r for r in recs if r.get("background_robustness")]
    if robust:
        arms = {r["model"]: [(r["background_robustness"][f"acc_{arm}"],
                              r["background_robustness"][f"acc_{arm}_ci"])
                             for arm in ("own", "foreign")] for r in robust}  # fmt: skip
        figure = figures.img(F.background_bars(["home", "foreign"], arms),
                             f"bg-robustness-{title}",
                             "accuracy (%) of the same objects pasted on a background of their "
                             "home label (their class's usual one where the dataset assigns "
                             "one, else their own) and of another (ForAug's background "
                             f"robustness: their ratio), {title}")  # fmt: skip
        body += ["<h3>Background robustness (ForAug): the same objects on other "
                 "backgrounds</h3>", figure]  # fmt: skip
    focused = [r for r in recs if r.get("foreground_focus")]
    if focused:
        focus = {r["model"]: (r["foreground_focus"]["summary"]["foreground_focus"],
                              r["foreground_focus"]["summary"]["ci"]) for r in focused}  # fmt: skip
        figure = figures.img(F.ratio_bars(focus, "saliency share on the object / its area"),
                             f"fg-focus-{title}",
                             "foreground focus (ForAug; input-gradient saliency on the "
                             f"object over the object's share of the image; 1: none), "
                             f"{title}")  # fmt: skip
        body += ["<h3>Foreground focus (ForAug): how much the saliency lies on the object</h3>",
                 figure]  # fmt: skip
    return body


def render(records: Sequence[dict[str, Any]], figures: Figures) -> tuple[str, str]:
    """The report page of ``records`` and its tables as Markdown: audit records (the latest
    per model, per dataset and split) and learn records (those with a ``run``)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    learned = [r for r in records if "run" in r]
    for r in records:
        if "run" not in r:
            groups.setdefault((r["dataset"], r["split"]), []).append(r)
    md: list[str] = ["# dreamshift report", ""]
    body = learn_section(learned, md) if learned else []
    for (dataset, split), recs in groups.items():
        recs = _latest(recs)
        name = recs[0].get("dataset_label", dataset)
        title = f"{Path(name).name} {split or 'all'}"
        body.append(f"<h2>{_esc(name)} — split {_esc(split or 'all')}</h2>")
        body.append(html_table(audit_rows(recs), "audit"))
        md += [f"## {name}, split {split or 'all'}", "", markdown(audit_rows(recs)), "",
               markdown(background_rows(recs)), ""]  # fmt: skip
        bgs = list(dict.fromkeys(b for r in recs for b in r["per_background"]))
        body.append("<h3>Accuracy by background</h3>")
        if len(recs) <= MAX_DETAILED:
            series = {r["model"]: [(r["per_background"].get(b, {}).get("acc"),
                                    r["per_background"].get(b, {}).get("ci")) for b in bgs]
                      for r in recs}  # fmt: skip
            body.append(figures.img(F.background_bars(bgs, series), f"backgrounds-{title}",
                                    f"accuracy by background, {title}"))  # fmt: skip
        body.append(html_table(background_rows(recs), "backgrounds"))
        body += robustness_section(recs, figures, title, md)
        shown = recs[:MAX_DETAILED]
        body += bias_section(shown, figures, title, md)
        body.append("<h3>Accuracy per class × background</h3>")
        for r in shown:
            fig = F.class_background_heatmap(r["model"], list(r["matrix"]), bgs, r["matrix"])
            body.append(figures.img(fig, f"heatmap-{title}-{r['model']}", r["model"]))
        body.append("<h3>Samples and predictions (wrong ones framed red)</h3>")
        for r in shown:
            try:
                grid = sample_grid(r, list(r["matrix"]))
            except DreamshiftError as exc:
                grid = f"<p>{_esc(exc)}</p>"
            body.append(f"<figure><figcaption>{_esc(r['model'])}</figcaption>{grid}</figure>")
        if len(recs) > len(shown):
            body.append(f"<p>Heatmaps and samples of the first {len(shown)} of {len(recs)} "
                        "models.</p>")  # fmt: skip
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1280px;color:#222}"
        "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
        "figcaption{font-size:12px;color:#555}img.figure{max-width:100%;height:auto}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}"
        "th,td{padding:3px 8px;border-bottom:1px solid #ddd}"
        "th{background:#f2f2f2;text-align:left}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}"
        "tbody tr:hover{background:#f6f6ff}.er{display:flex;gap:1em;align-items:flex-start}"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>dreamshift report"
        f"</title><style>{style}</style></head><body><h1>dreamshift report</h1>"
        f"{''.join(body)}</body></html>\n"
    )
    return page, "\n".join(md)


def write_report(results: Sequence[str | Path], out: str | Path) -> Path:
    """Write the report of one or more ``results.jsonl`` files to ``out``; its figures (PNG
    and PDF) and ``tables.md`` go to the folder ``<out stem>_files`` beside it."""
    records = []
    for path in results:
        for r in read_records(path):
            if "run" in r:  # a learn run: its folder sits next to results.jsonl
                r["folder"] = str(Path(path).parent / r["run"])
            records.append(r)
    if not records:
        raise DreamshiftError(f"{', '.join(map(str, results))} holds no records")
    # the page names models and datasets as another machine can read them: by their last
    # folder names, not by this machine's absolute paths (files are still read by the paths)
    models = display_names(r["model"] for r in records if "model" in r)
    datasets = display_names(r["dataset"] for r in records)
    for r in records:
        if "model" in r:
            r["model"] = models[r["model"]]
        r["dataset_label"] = datasets[r["dataset"]]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = out.with_name(out.stem + "_files")
    page, md = render(records, Figures(files))
    files.mkdir(parents=True, exist_ok=True)
    (files / "tables.md").write_text(md + "\n", encoding="utf-8")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
