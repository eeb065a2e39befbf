"""``dreamshift world recombine-study``: does ForAug's recombination (Nauen et al. 2025) undo a
background shortcut? Classifiers trained on world pastes whose background predicts the class
(ρ 0.95): ERM, ERM with ``--recombine world`` (p 0.5 and 1, and 1 with the object's size
drawn from 0.2-0.6 of the image), GroupDRO (Sagawa et al. 2020) and the D3S algorithm
(Kattakinda et al. 2022), each over several seeds, then audited for balanced, worst-group and
anti-correlated accuracy, BG-gap, accuracy on photos and ForAug's four biases.

Datasets (made once under ``OUT``): ``paste`` (the training data, with val, test and anti
splits), ``photos`` (balanced photos of unseen silhouettes) and ``bins`` (balanced pastes with
the splits ``size`` and ``position`` of the size and center bias). Runs go to ``OUT/runs``
(a relaunch skips finished ones), audits to ``OUT/audit.jsonl``, the table to
``OUT/recombine-study.json``: per architecture and method, the mean over seeds and its 95 %
t-interval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.audit.config import AuditConfig
from dreamshift.audit.evaluate import audit
from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.engine.results import read_records
from dreamshift.errors import DreamshiftError
from dreamshift.learn.config import LearnConfig
from dreamshift.learn.hparams import Hparams
from dreamshift.learn.run import learn

# method: what it changes in the ERM run every method starts from
METHODS: dict[str, dict[str, Any]] = {
    "erm": {},
    "erm + recombine p 0.5": {"recombine": "world", "recombine_p": 0.5},
    "erm + recombine p 1": {"recombine": "world", "recombine_p": 1.0},
    "erm + recombine p 1, scale 0.2-0.6": {"recombine": "world", "recombine_scale": (0.2, 0.6)},
    "groupdro": {"algorithm": "groupdro"},
    "d3s": {"algorithm": "d3s", "mi_anneal_steps": 100},
}
# the table's columns: (name, dataset, split, how the record gives it)
COLUMNS = (
    ("test", "paste", "test", ("acc_avg",)),
    ("test wg", "paste", "test", ("acc_wg",)),
    ("anti", "paste", "anti", ("acc_avg",)),
    ("bg gap", "paste", "test", ("bg_gap",)),
    ("photos", "photos", "test", ("acc_avg",)),
    ("bg robustness", "paste", "test", ("background_robustness", "summary",
                                        "background_robustness")),
    ("fg focus", "paste", "test", ("foreground_focus", "summary", "foreground_focus")),
    ("size bias", "bins", "test", ("size_bias", "summary", "size_bias")),
    ("center bias", "bins", "test", ("center_bias", "summary", "center_bias")),
)  # fmt: skip
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, 95 % two-sided


def datasets(out: Path, train_size: int, per_group: int, progress: bool) -> dict[str, Path]:
    """The study's three datasets under ``out``, composed where missing: ``per_group`` test
    images per class x background (``bins``: 40 % of them, times 13 placements)."""
    bins = max(1, round(0.4 * per_group))
    recipes: dict[str, tuple[ShiftRecipe, dict[str, Any]]] = {
        "paste": (ShiftRecipe(rho=0.95, train_size=train_size, val_per_group=1,
                              test_per_group=per_group, anti_per_group=per_group), {}),
        "photos": (ShiftRecipe(train_size=0, val_per_group=0, test_per_group=per_group,
                               anti_per_group=0), {"render": "photo", "seed": 13}),
        "bins": (ShiftRecipe(train_size=0, val_per_group=0, test_per_group=bins,
                             anti_per_group=0, scale_bins=(0.2, 0.3, 0.4, 0.6),
                             position_bins=3), {"seed": 7}),
    }  # fmt: skip
    for name, (recipe, fields) in recipes.items():
        if not (out / name / ds.DATASET_JSON).is_file():
            compose(ComposeConfig(recipe=recipe, **fields), out / name, progress=progress)
    return {name: out / name for name in recipes}


def run_config(arch: str, method: str, seed: int, epochs: int) -> LearnConfig:
    """The learn config of one cell of the study (input 32, cosine schedule, lr 3e-3)."""
    changes = dict(METHODS[method])
    anneal = changes.pop("mi_anneal_steps", Hparams().mi_anneal_steps)
    base = LearnConfig(arch=arch, epochs=epochs, input_size=32, lr_schedule="cosine", seed=seed,
                       hparams=replace(Hparams(), lr=3e-3, mi_anneal_steps=anneal))  # fmt: skip
    return base.replace(**changes)


def _value(record: dict[str, Any], path: Sequence[str]) -> float | None:
    value: Any = record
    for key in path:
        value = (value or {}).get(key)
    return None if value is None else float(value)


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, and the 95 % t-interval of the mean, of per-seed values.

    >>> mean_interval([0.5, 0.6, 0.7])["ci"]  # 0.6 -+ 4.303 x 0.1 / sqrt(3)
    [0.3516, 0.8484]
    """
    a = np.asarray(values, np.float64)
    if not len(a):
        return {"mean": None, "ci": None, "n": 0}
    if len(a) == 1:
        return {"mean": float(a[0]), "ci": None, "n": 1}
    mean = float(a.mean())
    half = T_975.get(len(a) - 1, 1.96) * float(a.std(ddof=1)) / np.sqrt(len(a))
    return {"mean": mean, "ci": [round(float(mean - half), 4), round(float(mean + half), 4)],
            "n": len(a)}  # fmt: skip


def recombine_study(
    out: str | Path,
    archs: Sequence[str] = ("world-cnn", "world-resnet18"),
    seeds: Sequence[int] = (0, 1, 2),
    train_size: int = 4000,
    epochs: int = 10,
    per_group: int = 10,
    methods: Sequence[str] = tuple(METHODS),
    progress: bool = True,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Train every (architecture, method of ``methods``, seed), audit each run on the three
    datasets, and return (and write to ``out/recombine-study.json``) one row per architecture
    and method."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DreamshiftError(f"no method {unknown} in the study: choose among {list(METHODS)}")
    out = Path(out).resolve()  # the audit records name runs and datasets by absolute paths
    data = datasets(out, train_size, per_group, progress)
    folders: dict[tuple[str, str], list[Path]] = {}
    for arch in archs:
        for method in methods:
            for seed in seeds:
                cfg = run_config(arch, method, seed, epochs)
                folders.setdefault((arch, method), []).append(
                    learn(data["paste"], out / "runs", cfg, log=log)
                )
    results = out / "audit.jsonl"
    every = [str(f) for runs in folders.values() for f in runs]
    done = {(r["model"], r["dataset"], r["split"]) for r in read_records(results)} \
        if results.is_file() else set()  # fmt: skip
    for name, split in (("paste", "test"), ("paste", "anti"), ("photos", "test"),
                        ("bins", "test")):  # fmt: skip
        todo = tuple(m for m in every if (m, str(data[name]), split) not in done)
        if todo:
            audit_cfg = AuditConfig(models=todo, split=split, bootstrap=200,
                                    mask_metrics=(name, split) == ("paste", "test"))  # fmt: skip
            audit(audit_cfg, data[name], results, log=log)
    latest = {(r["model"], r["dataset"], r["split"]): r for r in read_records(results)}
    rows = []
    for (arch, method), runs in folders.items():
        row: dict[str, Any] = {"arch": arch, "method": method, "seeds": list(seeds)}
        for column, name, split, path in COLUMNS:
            values = [_value(latest[(str(f), str(data[name]), split)], path) for f in runs]
            row[column] = mean_interval([v for v in values if v is not None])
        rows.append(row)
    (out / "recombine-study.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The study's table in Markdown: accuracies and gaps in %, ratios as they are; each cell
    the mean over seeds and its 95 % interval."""

    def cell(entry: dict[str, Any], percent: bool) -> str:
        k = 100 if percent else 1
        digits = 1 if percent else 2
        if entry["mean"] is None:
            return "–"
        text = f"{k * entry['mean']:.{digits}f}"
        ci = entry["ci"]
        return text + (f" [{k * ci[0]:.{digits}f}, {k * ci[1]:.{digits}f}]" if ci else "")

    ratios = {"bg robustness", "fg focus"}
    head = ["arch", "method", *(c for c, *_ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [r["arch"], r["method"], *(cell(r[c], c not in ratios) for c, *_ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
