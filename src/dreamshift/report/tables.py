"""The tables of audit and learn results, as text (terminal) and Markdown (README), built from
their ``results.jsonl`` records alone.

>>> percent(0.8123), percent(None)
('81.2', '–')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError
from dreamshift.train.run_folder import PROBES


def display_names(values: Iterable[str]) -> dict[str, str]:
    """A short name for each model spec or folder, the same for the same value and different
    for different ones, that names no folder of the machine that made it: a path (a run
    folder, a dataset) by its last parts, as few as tell it from the others; a spec with a
    weights file by the file's name; other specs as they are.

    >>> names = display_names(["/x/runs/erm-1a", "/x/a/sweep/real-n100",
    ...                        "/x/b/sweep/real-n100", "timm:resnet50@/x/w/r50.pth", "world-cnn"])
    >>> list(names.values())
    ['erm-1a', 'a/sweep/real-n100', 'b/sweep/real-n100', 'timm:resnet50@r50.pth', 'world-cnn']
    """
    values = list(dict.fromkeys(values))
    paths = {v: Path(v).parts for v in values if _is_path(v)}
    names = {}
    for v in values:
        head, at, file = v.partition("@")
        if v not in paths:
            names[v] = f"{head}@{Path(file).name}" if at and _is_path(file) else v
            continue
        parts = paths[v]
        for k in range(1, len(parts) + 1):
            if all(other[-k:] != parts[-k:] for u, other in paths.items() if u != v):
                break
        names[v] = "/".join(parts[-k:]).lstrip("/") or v
    return names


def _is_path(value: str) -> bool:
    """A folder or file name, not a model spec (``timm:NAME``, ``open_clip:ARCH/TAG``)."""
    first = value.split("/", 1)[0]
    return ("/" in value or Path(value).exists()) and ":" not in first


def percent(v: float | None) -> str:
    """A fraction as a percentage with one decimal; '–' for None."""
    return "–" if v is None else f"{100 * v:.1f}"


def audit_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The audit table as rows of cells, the header first: one line per model. A dataset with
    a cue-conflict split adds the shape bias (shape decisions / shape-or-coat decisions), one
    with split ``size`` or ``position`` ForAug's size bias (accuracy at the largest scale minus
    the smallest) or center bias (centre cell minus the others), in points, and images with
    masks its background robustness and foreground focus (ratios); a model with more
    outputs than the dataset has classes adds its full-label-space top-1 and top-5."""
    head = ["model", "n", "acc_avg [95% CI]", "acc_wg (group)", "bg_gap"]
    has_full = any(
        r.get("acc_full_top1") is not None and r.get("label_map", {}).get("kind") != "identity"
        for r in records
    )
    head += ["full top-1", "full top-5"] * has_full
    has_id = any("acc_id" in r for r in records)
    has_spurious = any("spurious_acc" in r for r in records)
    has_conflict = any("shape_bias" in r for r in records)
    head += ["acc_id", "rel. drop", "ER logit"] * has_id + ["spur. acc", "spur. AUC"] * has_spurious
    head += ["shape bias (shape/cue)"] * has_conflict
    biases = [b for b in ("size_bias", "center_bias") if any(b in r for r in records)]
    head += [f"{b.replace('_', ' ')} [95% CI]" for b in biases]
    ratios = [b for b in RATIO_BIASES if any(b in r for r in records)]
    head += [f"{RATIO_BIASES[b]} [95% CI]" for b in ratios]
    lines = [head]
    for r in records:
        ci = r.get("acc_avg_ci")
        wg = r.get("worst_group") or {}
        cells = [
            r["model"],
            str(r["n"]),
            f"{percent(r['acc_avg'])} [{percent(ci[0])}, {percent(ci[1])}]"
            if ci
            else percent(r["acc_avg"]),
            f"{percent(r['acc_wg'])} ({'/'.join(str(v) for v in wg.values())})",
            percent(r.get("bg_gap")),
        ]
        if has_full:
            cells += [percent(r.get("acc_full_top1")), percent(r.get("acc_full_top5"))]
        if has_id:
            er = r.get("effective_robustness") or {}
            logit_er = er.get("logit", {}).get("this_model")
            cells += [percent(r.get("acc_id")), percent(r.get("relative_drop")), percent(logit_er)]
        if has_spurious:
            cells += [percent(r.get("spurious_acc")), percent(r.get("spurious_auc"))]
        if has_conflict:
            cells.append(_shape_bias_cell(r))
        cells += [_bias_cell(r, b) for b in biases]
        cells += [_ratio_cell(r, b) for b in ratios]
        lines.append(cells)
    return lines


def background_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Accuracy (%) per background (rows) of each model (columns), the header first."""
    backgrounds = list(dict.fromkeys(b for r in records for b in r["per_background"]))
    rows = [["background", *(r["model"] for r in records)]]
    rows += [
        [b, *(percent(r["per_background"].get(b, {}).get("acc")) for r in records)]
        for b in backgrounds
    ]
    return rows


def size_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Accuracy (%) per scale of split ``size`` (rows) of each model with one (columns)."""
    recs = [r for r in records if r.get("size_bias")]
    scales = sorted({b["scale"] for r in recs for b in r["size_bias"]["bins"]})
    acc = [{b["scale"]: b["acc"] for b in r["size_bias"]["bins"]} for r in recs]
    rows = [["scale", *(r["model"] for r in recs)]]
    rows += [[f"{s:g}", *(percent(a.get(s)) for a in acc)] for s in scales]
    return rows


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """The audit table (:func:`audit_rows`) and accuracy per background, as aligned text, the
    models by their short names (:func:`display_names`)."""
    names = display_names(r["model"] for r in records)
    records = [{**r, "model": names[r["model"]]} for r in records]
    return (
        _align(audit_rows(records))
        + "\n\naccuracy (%) per background\n"
        + _align(background_rows(records))
    )


def _shape_bias_cell(r: dict[str, Any]) -> str:
    """'75.0 (3/4)': the shape bias, and the shape decisions of the decisions for either cue."""
    if "shape_bias" not in r:
        return "–"
    decided = r["shape_decisions"] + r["coat_decisions"]
    return f"{percent(r['shape_bias'])} ({r['shape_decisions']}/{decided})"


def _bias_cell(r: dict[str, Any], name: str) -> str:
    """'-12.5 [-30.0, 5.0]': a ForAug bias (``size_bias``, ``center_bias``) in points."""
    summary = (r.get(name) or {}).get("summary") or {}
    value, ci = summary.get(name), summary.get("ci")
    return f"{percent(value)} [{percent(ci[0])}, {percent(ci[1])}]" if ci else percent(value)


RATIO_BIASES = {"background_robustness": "bg robustness", "foreground_focus": "fg focus"}


def _ratio_cell(r: dict[str, Any], name: str) -> str:
    """'0.79 [0.63, 0.96]': a ForAug ratio (``background_robustness``, ``foreground_focus``)."""
    summary = (r.get(name) or {}).get("summary") or {}
    value, ci = summary.get(name), summary.get("ci")
    if value is None:
        return "–"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def read_predictions(record: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(record["predictions"])
    if not path.is_file():
        raise DreamshiftError(f"predictions file {path} of {record['model']} is missing")
    return pq.read_table(path).to_pylist()


def probe_rows(matrix: dict[str, dict[str, float]]) -> list[list[str]]:
    """The disentanglement matrix, header first: feature block -> label accuracy (%)."""
    labels = list(matrix["chance"])
    rows = [["features", *(f"→ {lab}" for lab in labels)]]
    rows += [[block, *(percent(row[lab]) for lab in labels)] for block, row in matrix.items()]
    return rows


def markdown(rows: list[list[str]]) -> str:
    """Rows of cells (header first) as a Markdown table, numbers right-aligned."""
    numeric = [all(is_numeric(r[i]) for r in rows[1:]) for i in range(len(rows[0]))]
    cells = [[c.replace("|", "\\|") for c in r] for r in rows]  # a | inside a cell
    lines = ["| " + " | ".join(cells[0]) + " |"]
    lines.append("|" + "".join("---:|" if n else "---|" for n in numeric))
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def is_numeric(cell: str) -> bool:
    """Whether a cell reads as a number ('81.2', '81.2 [79.0, 83.1]', '–')."""
    head = cell.split(" ")[0]
    return head == "–" or head.replace(".", "", 1).lstrip("-").isdigit()


def learn_rows(
    records: list[dict[str, Any]], splits: tuple[str, ...] = (ds.TEST, ds.ANTI)
) -> list[list[str]]:
    """The spurious-task table, header first, one line per run: what it trained on (rho, paste
    or dreamed), the algorithm (``on <run>`` for a head on frozen features, ``, background
    erased`` with LEACE), and acc_avg [95 % CI] and worst-group accuracy (%) on each split."""
    head = ["algorithm", "trained on", "rho", "epochs", "seed"]
    for split in splits:
        head += [f"{split} acc_avg [95% CI]", f"{split} acc_wg"]
    lines = [head]
    for r in records:
        cfg = r["config"]
        algorithm = cfg["algorithm"]
        if cfg.get("features_from"):
            algorithm += f" on {Path(cfg['features_from']).name}"
            if cfg.get("erase"):
                algorithm += f", {cfg['erase']} erased"
        stage = {"compose": "paste", "dream": "dreamed"}.get(r.get("dataset_stage") or "", "?")
        rho = "–" if r.get("rho") is None else f"{r['rho']:g}"
        cells = [algorithm, f"{Path(r['dataset']).name} ({stage})", rho]
        cells += [str(cfg["epochs"]), str(cfg["seed"])]
        for split in splits:
            m = r["splits"].get(split)
            if not m or m.get("acc_avg") is None:
                cells += ["–", "–"]
                continue
            ci = m.get("acc_avg_ci") or [None, None]
            cells += [
                f"{percent(m['acc_avg'])} [{percent(ci[0])}, {percent(ci[1])}]",
                percent(m["acc_wg"]),
            ]
        lines.append(cells)
    return lines


def read_probes(folder: str | Path) -> list[dict[str, Any]]:
    """Every probe record of a run folder (``dreamshift probe`` appends one per call)."""
    path = Path(folder) / PROBES
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
