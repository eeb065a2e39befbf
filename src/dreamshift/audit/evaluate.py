"""``dreamshift audit``: run classifiers over a dataset directory and measure, per foreground
class and per background, how they hold up (D3S, Kattakinda et al. 2022, Sec. 5.1: popular
classifiers lose accuracy when the background changes).

Everything comes from the manifest and ``dataset.json``: the groups (any manifest columns,
``fg_class`` x ``bg_class`` by default), the groups a split was planned to hold (an empty one is
an error: its accuracy is missing, not high), each class's usual background (for the BG-gap)
and the spurious-only images (split ``spurious``: a background without an animal). A dataset
with a ``conflict`` split (one class's shape in another class's coat) also gets each model's
shape bias (Geirhos et al. 2019); one with a ``size`` or ``position`` split (the test samples
again at fixed scales, or centred in each cell of a grid) gets ForAug's size and center bias
(Nauen et al. 2025; :mod:`dreamshift.audit.biases`). Results are appended to
``results.jsonl``, one record per model x dataset x split, and each model's per-sample
predictions are kept next to it for the report.

>>> import tempfile
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> from dreamshift.compose.runner import compose
>>> tmp = tempfile.mkdtemp()
>>> recipe = ShiftRecipe(train_size=16, val_per_group=1, test_per_group=2, anti_per_group=1)
>>> world = ComposeConfig(classes=("cat", "zebra"), background_names=("grass", "snow"),
...                       size=32, recipe=recipe)
>>> _ = compose(world, f"{tmp}/world", progress=False)
>>> cfg = AuditConfig(models=("world-cnn",), bootstrap=10)
>>> records = audit(cfg, f"{tmp}/world", log=lambda line: None)
>>> records[0]["model"], records[0]["split"], records[0]["n"]
('world-cnn', 'test', 8)
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import dreamshift
from dreamshift import metrics as M
from dreamshift.audit import biases
from dreamshift.audit.config import AuditConfig
from dreamshift.data import dataset as ds
from dreamshift.data.loading import iter_batches, usable_rows
from dreamshift.data.recombine import BackgroundSource
from dreamshift.data.verification import only_verified
from dreamshift.engine.executors import Executor, InProcess
from dreamshift.engine.results import RESULTS, append_records, read_records
from dreamshift.errors import DreamshiftError
from dreamshift.models.classifier import Classifier
from dreamshift.models.labels import LabelMap, read_label_map
from dreamshift.models.loading import absolute_spec, load_classifier
from dreamshift.train.run_folder import sweep_members
from dreamshift.world.backgrounds import BACKGROUNDS
from dreamshift.world.sources import background_source


@dataclass(frozen=True)
class Evaluated:
    """Predictions of one model on the usable rows of one dataset split: ``predicted`` is the
    best dataset class (restricted to the dataset's classes) or, over the full label space, the
    class the top-1 output belongs to (``(label name)`` when it belongs to none)."""

    rows: list[dict[str, Any]]
    scores: np.ndarray  # (N, K) over the dataset's classes
    predicted: list[str]
    unreadable: list[tuple[str, str]]  # (sample_id, reason)
    top: np.ndarray | None = None  # (N, 5) the model's top outputs, best first
    top_logits: np.ndarray | None = None  # (N, 5) their logits


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


TOP_K = 5


def predict(
    clf: Classifier,
    labels: LabelMap,
    root: Path,
    rows: list[dict[str, Any]],
    batch_size: int,
    restrict: bool = True,
) -> Evaluated:
    """Scores over the dataset's classes and the model's top-5 outputs for every readable row;
    unreadable files are recorded and skipped. ``restrict``: predict among the dataset's
    classes; else the top-1 output decides (see :class:`Evaluated`)."""
    k = min(TOP_K, len(clf.classes))
    scores = np.zeros((len(rows), len(labels.classes)), np.float32)
    top = np.zeros((len(rows), k), np.int64)
    top_logits = np.zeros((len(rows), k), np.float32)
    keep = np.ones(len(rows), bool)
    unreadable = []
    for positions, images, bad in iter_batches(root, rows, batch_size):
        for i, reason in bad:
            keep[i] = False
            unreadable.append((rows[i]["sample_id"], reason))
        if images is not None:
            logits = clf.logits(images)
            scores[positions] = labels.scores(logits)
            order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
            top[positions] = order
            top_logits[positions] = np.take_along_axis(logits, order, axis=1)
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    scores, top, top_logits = scores[keep], top[keep], top_logits[keep]
    if restrict:
        predicted = [labels.classes[i] for i in scores.argmax(1)] if len(kept) else []
    else:
        owner = labels.owners(len(clf.classes))[top[:, 0]] if len(kept) else np.zeros(0, int)
        predicted = [
            labels.classes[o] if o >= 0 else f"({clf.classes[t]})"
            for o, t in zip(owner, top[:, 0], strict=True)
        ]
    return Evaluated(kept, scores, predicted, unreadable, top, top_logits)


def label_space_accuracy(
    ev: Evaluated, labels: LabelMap, n_outputs: int
) -> dict[str, float | None]:
    """Accuracy restricted to the dataset's classes and over the model's full label space:
    top-1 and top-5 hit when the output belongs to the row's class (ImageNet-9, Xiao et al.
    2021, reports both)."""
    if not ev.rows or ev.top is None:
        return {"acc_restricted": None, "acc_full_top1": None, "acc_full_top5": None}
    truth = [labels.classes.index(r["fg_class"]) if r["fg_class"] in labels.classes else -1
             for r in ev.rows]  # fmt: skip
    owner = labels.owners(n_outputs)
    hits = owner[ev.top] == np.array(truth)[:, None]
    restricted = ev.scores.argmax(1) == np.array(truth)
    return {
        "acc_restricted": float(restricted.mean()),
        "acc_full_top1": float(hits[:, 0].mean()),
        "acc_full_top5": float(hits.any(1).mean()),
    }


def _default_split(manifest: list[dict[str, Any]]) -> str:
    return ds.TEST if any(r["split"] == ds.TEST for r in manifest) else ""


def _check_group_fields(root: Path, group_by: Sequence[str]) -> None:
    columns = ds.MANIFEST_SCHEMA.names
    unknown = [g for g in group_by if g not in columns]
    if unknown or not group_by:
        raise DreamshiftError(
            f"unknown group field(s) {unknown or '(none given)'} for {root}: choose among the "
            f"manifest columns {', '.join(c for c in columns if c not in ('sha256', 'path'))}"
        )


def expected_groups(meta: ds.DatasetMeta, split: str, group_by: Sequence[str]) -> list[tuple]:
    """The (class, background) groups ``dataset.json`` says the split was planned to hold."""
    if tuple(group_by) not in (("fg_class", "bg_class"), ("bg_class", "fg_class")):
        return []
    planned = meta.splits[split].groups if split in meta.splits else {}
    pairs = [(c, b) for c, by_bg in planned.items() for b, n in by_bg.items() if n > 0]
    return pairs if group_by[0] == "fg_class" else [(b, c) for c, b in pairs]


def _named(fields: Sequence[str], key: Any) -> dict[str, Any]:
    return dict(zip(fields, key, strict=True))


def _stat(s: M.GroupStat) -> dict[str, Any]:
    return {"n": s.n, "acc": s.acc, "ci": list(s.ci) if s.ci else None}


def measure(
    ev: Evaluated,
    classes: Sequence[str],
    backgrounds: Sequence[str],
    group_by: Sequence[str],
    expected: Sequence[tuple],
    usual_bg: dict[str, str],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Every accuracy metric of one model on one split. Per-background and per-class entries
    follow the dataset's order; those with no images are left out."""
    truth = [r["fg_class"] for r in ev.rows]
    correct = np.array([p == t for p, t in zip(ev.predicted, truth, strict=True)], bool)
    keys: list[Any] = [tuple(r[g] for g in group_by) for r in ev.rows]
    groups = M.group_stats(correct, keys, expected, n_boot, seed)
    worst = M.worst_group(groups)
    out: dict[str, Any] = {
        "n": len(correct),
        "acc_avg": M.accuracy(correct),
        "acc_avg_ci": M.bootstrap_ci(correct, n_boot, seed),
        "acc_wg": worst[1] if worst else None,
        "acc_wg_ci": M.worst_group_ci(correct, keys, n_boot, seed),
        "worst_group": _named(group_by, worst[0]) if worst else None,
        "groups": [{"group": _named(group_by, k), **_stat(s)} for k, s in groups.items()],
    }
    for field, name, order in (
        ("bg_class", "per_background", backgrounds),
        ("fg_class", "per_class", classes),
    ):
        stats = M.group_stats(correct, [r[field] for r in ev.rows], order, n_boot, seed)
        out[name] = {k: _stat(s) for k, s in stats.items() if s.n}
    tally: dict[str, dict[str, list[int]]] = {c: {} for c in classes}  # class -> bg -> [ok, n]
    for r, ok in zip(ev.rows, correct, strict=True):
        cell = tally.setdefault(r["fg_class"], {}).setdefault(r["bg_class"], [0, 0])
        cell[0] += int(ok)
        cell[1] += 1
    matrix = {c: {b: ok / n for b, (ok, n) in by_bg.items()} for c, by_bg in tally.items()}
    out["matrix"] = matrix
    if usual_bg:
        usual = np.array([usual_bg.get(r["fg_class"]) == r["bg_class"] for r in ev.rows], bool)
        out.update(M.bg_gap(correct, usual))
    return out


def _spurious_metrics(
    ev_real: Evaluated, ev_spurious: Evaluated, classes: Sequence[str], usual_bg: dict[str, str]
) -> dict[str, Any]:
    tied_class = [{c for c, b in usual_bg.items() if b == r["bg_class"]} for r in ev_spurious.rows]
    score, per_class = M.spurious_auc(
        ev_real.scores,
        classes,
        [r["fg_class"] for r in ev_real.rows],
        ev_spurious.scores,
        tied_class,
    )
    return {
        "n_spurious": len(ev_spurious.rows),
        "spurious_acc": M.spurious_accuracy(ev_spurious.predicted, tied_class),
        "spurious_auc": score,
        "spurious_auc_per_class": per_class,
    }


def is_cue_conflict(row: dict[str, Any], classes: Sequence[str]) -> bool:
    """Whether ``row`` shows one of ``classes``' shapes in another of ``classes``' coats: only
    then can a classifier over ``classes`` choose either cue."""
    coat = row.get("coat_class")
    return row["fg_class"] in classes and coat in classes and coat != row["fg_class"]


def shape_bias(rows: Sequence[dict[str, Any]], predicted: Sequence[str]) -> dict[str, Any]:
    """Shape bias on cue-conflict images (Geirhos et al. 2019): of the decisions that follow
    either cue, the share that follows the shape (``fg_class``) rather than the coat
    (``coat_class``); ``None`` when no decision follows either. Rows without another class's
    coat are no conflict and are left out.

    >>> rows = [{"fg_class": "cat", "coat_class": "zebra"}] * 5
    >>> shape_bias(rows, ["cat", "zebra", "cat", "dog", "cat"])
    {'conflict_n': 5, 'shape_decisions': 3, 'coat_decisions': 1, 'shape_bias': 0.75}
    """
    conflicts = [
        (p, r)
        for p, r in zip(predicted, rows, strict=True)
        if r.get("coat_class") not in (None, r["fg_class"])
    ]
    shape = sum(p == r["fg_class"] for p, r in conflicts)
    coat = sum(p == r["coat_class"] for p, r in conflicts)
    return {
        "conflict_n": len(conflicts),
        "shape_decisions": shape,
        "coat_decisions": coat,
        "shape_bias": shape / (shape + coat) if shape + coat else None,
    }


def _write_predictions(
    path: Path, ev: Evaluated, classes: Sequence[str], model_classes: Sequence[str]
) -> None:
    """One row per image: its labels, the prediction, the score of every dataset class and the
    model's top-5 outputs (index, label name, logit): enough to recompute every number."""
    idx = {c: i for i, c in enumerate(classes)}
    true_score = [
        float(ev.scores[i, idx[r["fg_class"]]]) if r["fg_class"] in idx else None
        for i, r in enumerate(ev.rows)
    ]
    columns: dict[str, Any] = {
        "sample_id": [r["sample_id"] for r in ev.rows],
        "split": [r["split"] for r in ev.rows],
        "path": [r["path"] for r in ev.rows],
        "fg_class": [r["fg_class"] for r in ev.rows],
        "bg_class": [r["bg_class"] for r in ev.rows],
        "predicted": ev.predicted,
        "score_true": true_score,
    }
    for c, i in idx.items():
        columns[f"score:{c}"] = ev.scores[:, i].astype(np.float32) if len(ev.rows) else []
    if ev.top is not None and ev.top_logits is not None:
        columns["top5_outputs"] = ev.top.tolist()
        columns["top5_labels"] = [[model_classes[t] for t in row] for row in ev.top]
        columns["top5_logits"] = ev.top_logits.tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.write_table_atomic(pa.table(columns), path)


def expand_models(specs: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each model spec with what its record says of its family: a sweep folder (``learn``, or
    the earlier ``train-classifier``, with ``--train-sizes``) stands for its runs, each with
    its sweep, mix (``family``) and training size."""
    out: list[tuple[str, dict[str, Any]]] = []
    for spec in specs:
        members = sweep_members(Path(spec)) if Path(spec).is_dir() else None
        if members is None:
            out.append((spec, {}))
            continue
        for m in members:
            out.append((m["folder"], {"sweep": str(Path(spec).resolve()), "family": m["mix"],
                                      "train_size": m["train_size"]}))  # fmt: skip
    return out


def _family_key(r: dict[str, Any]) -> tuple:
    ref = r.get("in_distribution") or {}
    return r["dataset_hash"], r["split"], ref.get("dataset_hash"), ref.get("split")


@dataclass(frozen=True)
class AuditJob:
    """Everything one model's evaluation needs, read and checked once (shipped whole to an
    executor's workers): the dataset and its rows, the groups to expect, the spurious,
    cue-conflict and in-distribution rows, and where records and predictions go."""

    cfg: AuditConfig
    root: Path
    meta: ds.DatasetMeta
    classes: list[str]
    split: str
    rows: list[dict[str, Any]]
    expected: list[tuple]
    usual_bg: dict[str, str]
    spurious_root: Path
    spurious_rows: list[dict[str, Any]]
    conflict_rows: list[dict[str, Any]]
    in_distribution: tuple[Path, str, list[dict[str, Any]], ds.DatasetMeta] | None
    mapping: dict[str, Any] | None
    results_path: Path
    size_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    position_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    grid: tuple[int, int] | None = None  # (K, image side) of the position split's grid
    backgrounds: BackgroundSource | None = None  # for the background robustness


def plan_audit(cfg: AuditConfig, root: Path, results: str | Path | None) -> AuditJob:
    """Read the dataset once and refuse what cannot be audited (no usable rows, a planned group
    left empty, an in-distribution dataset without the split)."""
    meta = ds.DatasetMeta.read(root)
    classes = list(meta.classes)
    _check_group_fields(root, cfg.group_by)
    manifest = ds.read_manifest(root).to_pylist()
    split = cfg.split or _default_split(manifest)
    rows = usable_rows(manifest, split)
    if cfg.verified_only:
        rows = only_verified(root, rows)
    if not rows:
        raise DreamshiftError(
            f"{root} has no usable{' verified' * cfg.verified_only} rows in split "
            f"{split or '(any)'}"
        )
    expected = expected_groups(meta, split, cfg.group_by) if split else []
    present = {tuple(r[g] for g in cfg.group_by) for r in rows}
    empty = [g for g in expected if g not in present]
    if empty and not cfg.allow_empty_groups:
        raise DreamshiftError(
            f"split {split!r} of {root} has no usable images in group(s) "
            f"{', '.join('/'.join(g) for g in empty[:5])}{' ...' if len(empty) > 5 else ''}; "
            "their accuracy would be missing from the worst group. Re-run the command that "
            "made the dataset to retry failed samples (`dreamshift info --failed` lists them), "
            "or pass --allow-empty-groups"
        )
    spurious_root, spurious_rows = root, usable_rows(manifest, ds.SPURIOUS)
    position_rows = usable_rows(manifest, ds.POSITION)
    source = meta.source
    if cfg.spurious:  # backgrounds alone from elsewhere, e.g. `dream --mode remove`
        spurious_root = Path(cfg.spurious)
        spurious_rows = usable_rows(ds.read_manifest(spurious_root).to_pylist(), ds.SPURIOUS)
        if not spurious_rows:
            raise DreamshiftError(
                f"--spurious {spurious_root} has no usable images in split 'spurious': give a "
                "`dream --mode remove` run or a dataset composed with --spurious-per-class"
            )
    elif not spurious_rows and source and (Path(source) / ds.DATASET_JSON).is_file():
        spurious_root = Path(source)  # a dreamed dataset: its guides' backgrounds alone
        spurious_rows = usable_rows(ds.read_manifest(spurious_root).to_pylist(), ds.SPURIOUS)
    return AuditJob(
        cfg, root, meta, classes, split, rows, expected, dict(meta.assignment),
        spurious_root, spurious_rows,
        [r for r in usable_rows(manifest, ds.CONFLICT) if is_cue_conflict(r, classes)],
        _in_distribution(cfg.in_distribution) if cfg.in_distribution else None,
        read_label_map(cfg.label_map) if cfg.label_map else None,
        (Path(results) if results else root / "audit" / RESULTS).resolve(),
        usable_rows(manifest, ds.SIZE), position_rows,
        position_grid(root, meta) if position_rows else None,
        background_source_of(cfg.backgrounds, meta),
    )  # fmt: skip


def background_source_of(spec: str, meta: ds.DatasetMeta) -> BackgroundSource | None:
    """The source of ``--backgrounds``: by default the world's scenes for a dataset whose
    backgrounds are all the world's, else none."""
    if spec == "none" or (not spec and not set(meta.backgrounds) <= set(BACKGROUNDS)):
        return None
    source = background_source(spec or "world")
    missing = [b for b in meta.backgrounds if b not in source.names]
    if missing:
        raise DreamshiftError(
            f"--backgrounds {spec} has no {', '.join(missing)} (it has "
            f"{', '.join(source.names)}): give a source with every background of the dataset, "
            "or --backgrounds none"
        )
    return source


def position_grid(root: Path, meta: ds.DatasetMeta) -> tuple[int, int] | None:
    """(K, image side) of the grid that placed split ``position``: the recipe of the composed
    dataset, found through the sources of dreams (their boxes are their guides'); None when
    that dataset is gone."""
    seen, where = [root], meta
    while True:
        k, side = where.recipe.get("position_bins"), where.config.get("size")
        if where.stage == "compose" and isinstance(k, int) and k and isinstance(side, int):
            return k, side
        source = Path(where.source) if where.source else None
        if source is None or source in seen or not (source / ds.DATASET_JSON).is_file():
            return None
        seen.append(source)
        where = ds.DatasetMeta.read(source)


def _in_distribution(text: str) -> tuple[Path, str, list[dict[str, Any]], ds.DatasetMeta]:
    """``DIR[:SPLIT]``: the dataset, its split (test by default), usable rows and metadata."""
    root, split = Path(text), ""
    if not root.exists() and ":" in text:
        path, _, split = text.rpartition(":")
        root = Path(path)
    meta = ds.DatasetMeta.read(root)
    manifest = ds.read_manifest(root).to_pylist()
    split = split or _default_split(manifest)
    if not split:
        raise DreamshiftError(
            f"{root} has no test split: name the in-distribution split, "
            f"--in-distribution {root}:SPLIT"
        )
    rows = usable_rows(manifest, split)
    if not rows:
        raise DreamshiftError(f"{root} has no usable rows in split {split or '(any)'}")
    return root, split, rows, meta


def evaluate_model(
    job: AuditJob, item: tuple[int, tuple[str, dict[str, Any]]]
) -> tuple[int, dict[str, Any], list[str]]:
    """One model's record (and what to tell the user), wherever the executor runs it."""
    index, (spec, lineage) = item
    cfg, root, notes = job.cfg, job.root, []
    clf = load_classifier(spec, job.classes, cfg.device, cfg.allow_random_weights)
    labels = LabelMap.build(clf.classes, job.classes, job.mapping, spec, clf.label_space)
    side = int(job.meta.config.get("size") or 0)
    if side and clf.input_size > 2 * side:
        notes.append(
            f"note: {spec} takes {clf.input_size} px inputs; the {side} px images of "
            f"{root} are upsampled (compose --size {clf.input_size} makes them at its size)"
        )
    if job.position_rows and job.grid is None:
        notes.append(
            f"note: split 'position' of {root} left out: the composed dataset whose recipe "
            "holds its grid (position_bins) cannot be read; restore it for the center bias"
        )
    restrict = cfg.restrict_labels or labels.identity
    start = time.perf_counter()
    ev = predict(clf, labels, root, job.rows, cfg.batch_size, restrict)
    seconds = time.perf_counter() - start
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dreamshift_version": dreamshift.__version__,
        "model": absolute_spec(spec),  # written relative to the records file
        "model_name": clf.name,
        **lineage,
        "weights_sha256": clf.weights_sha256,
        "weights_file": clf.weights_file,
        "preprocessing": clf.preprocessing.to_dict(),
        "label_space": clf.label_space or f"{len(clf.classes)} outputs",
        "label_map": labels.describe(),
        "headline": "restricted to the dataset's classes" if restrict else "full label space",
        **label_space_accuracy(ev, labels, len(clf.classes)),
        "dataset": str(root.resolve()),
        "dataset_hash": job.meta.content_hash,
        "stage": job.meta.stage,
        "split": job.split,
        "verified_only": cfg.verified_only,
        "group_by": list(cfg.group_by),
        "n_unreadable": len(ev.unreadable),
        "unreadable": [[sample, _without_root(error, root)] for sample, error in ev.unreadable],
        **measure(
            ev,
            job.classes,
            list(job.meta.backgrounds),
            cfg.group_by,
            job.expected,
            job.usual_bg,
            cfg.bootstrap,
            cfg.seed,
        ),
        "images_per_s": round(len(job.rows) / seconds, 1),
    }
    probes = _probe_metrics(job, clf, labels, restrict, ev, record)
    if job.in_distribution is not None:
        record.update(_drop(job, clf, labels, restrict, record["acc_avg"]))
    record.update(_prediction_files(job, spec, clf, restrict, record, ev, probes))
    done = (
        f"audited {spec} on {root} ({job.split or 'all splits'}): {len(job.rows)} images in "
        f"{seconds:.1f} s"
    )
    return index, record, [*notes, done]


def _probe_metrics(
    job: AuditJob,
    clf: Classifier,
    labels: LabelMap,
    restrict: bool,
    ev: Evaluated,
    record: dict[str, Any],
) -> dict[str, Evaluated]:
    """Add to ``record`` the metrics of the probe splits (spurious accuracy and AUC, shape
    bias, ForAug's size and center bias) and of the audited images' masks (foreground focus,
    background robustness); returns the probe splits' predictions, kept beside the split's."""
    cfg, root = job.cfg, job.root
    probes: dict[str, Evaluated] = {}  # predictions of the probe splits, kept beside the split's
    if job.spurious_rows:
        ev_spurious = predict(clf, labels, job.spurious_root, job.spurious_rows, cfg.batch_size,
                              restrict)  # fmt: skip
        record.update(_spurious_metrics(ev, ev_spurious, job.classes, job.usual_bg))
        record["spurious_from"] = str(job.spurious_root)
        probes[ds.SPURIOUS] = ev_spurious
    if job.conflict_rows:
        ev_conflict = predict(clf, labels, root, job.conflict_rows, cfg.batch_size, restrict)
        record.update(shape_bias(ev_conflict.rows, ev_conflict.predicted))
    if job.size_rows:  # ForAug's size bias: the test samples at fixed scales
        ev_size = predict(clf, labels, root, job.size_rows, cfg.batch_size, restrict)
        record["size_bias"] = biases.size_bias(
            ev_size.rows, ev_size.predicted, cfg.bootstrap, cfg.seed
        )
        probes[ds.SIZE] = ev_size
    if job.position_rows and job.grid is not None:  # and center bias: in every grid cell
        ev_position = predict(clf, labels, root, job.position_rows, cfg.batch_size, restrict)
        record["center_bias"] = biases.center_bias(
            ev_position.rows, ev_position.predicted, *job.grid, cfg.bootstrap, cfg.seed
        )
        probes[ds.POSITION] = ev_position
    if cfg.mask_metrics:  # ForAug's foreground focus and background robustness
        record.update(biases.mask_metrics(clf, labels, root, ev.rows, job.meta, job.backgrounds,
                                          cfg.batch_size, cfg.bootstrap, cfg.seed))  # fmt: skip
        if "background_robustness" in record:
            record["background_robustness"]["backgrounds"] = cfg.backgrounds or "world"
    return probes


def _drop(
    job: AuditJob, clf: Classifier, labels: LabelMap, restrict: bool, acc: float | None
) -> dict[str, Any]:
    """Accuracy on the in-distribution dataset and the drop from it (Recht et al. 2019)."""
    assert job.in_distribution is not None
    id_root, id_split, id_rows, id_meta = job.in_distribution
    ev_id = predict(clf, labels, id_root, id_rows, job.cfg.batch_size, restrict)
    acc_id = M.accuracy(
        np.array([p == r["fg_class"] for p, r in zip(ev_id.predicted, ev_id.rows, strict=True)])
    )
    out: dict[str, Any] = {
        "in_distribution": {
            "dataset": str(id_root.resolve()),
            "split": id_split,
            "dataset_hash": id_meta.content_hash,
        },
        "acc_id": acc_id,
        "drop": None,
        "relative_drop": None,
    }
    if acc_id is not None and acc is not None:
        out["drop"], out["relative_drop"] = acc_id - acc, M.relative_drop(acc_id, acc)
    return out


def _without_root(text: str, root: Path) -> str:
    """An error message with the dataset's folder named as the dataset (records travel)."""
    for prefix in {str(root.resolve()), str(root)}:
        text = text.replace(prefix, root.name)
    return text


def _prediction_files(
    job: AuditJob,
    spec: str,
    clf: Classifier,
    restrict: bool,
    record: dict[str, Any],
    ev: Evaluated,
    probes: dict[str, Evaluated],
) -> dict[str, str]:
    """The per-image predictions, one file per model, weights, dataset and split (a later
    audit never overwrites the predictions an earlier record points to unless they are the
    same), and each probe split's (spurious, size, position) beside it."""
    model = Path(spec).name if Path(spec).is_dir() else spec.partition("@")[0]  # no folder path
    name = (
        f"{_slug(model)}-{clf.weights_sha256[:12] or 'noweights'}-"
        f"{record['dataset_hash'] or _slug(job.root.name)}-{job.split or 'all'}"
        f"{'' if restrict else '-full'}.parquet"
    )
    pred_path = job.results_path.parent / "predictions" / name
    _write_predictions(pred_path, ev, job.classes, clf.classes)
    out = {"predictions": str(pred_path)}
    for split, ev_probe in probes.items():  # e.g. the background-only images, for the
        # spurious accuracy and AUC
        probe_path = pred_path.with_name(f"{pred_path.stem}-{split}.parquet")
        _write_predictions(probe_path, ev_probe, job.classes, clf.classes)
        out[f"predictions_{split}"] = str(probe_path)
    return out


def audit(
    cfg: AuditConfig,
    dataset: str | Path,
    results: str | Path | None = None,
    log: Any = print,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every model of ``cfg`` on ``dataset``; append one record per model to
    ``results`` (default ``DATASET/audit/results.jsonl``) and return the records. ``executor``
    evaluates the models elsewhere (one task per model; default: here, one after another)."""
    cfg.check()
    job = plan_audit(cfg, Path(dataset), results)
    results_path = job.results_path
    models = list(enumerate(expand_models(cfg.models)))
    by_index = {}
    for index, record, notes in (executor or InProcess()).map(lambda: job, evaluate_model, models):
        for line in notes:
            log(line)
        by_index[index] = record
    records = [by_index[i] for i, _ in models]  # in the order given, on any executor

    if cfg.in_distribution:
        earlier = read_records(results_path) if results_path.is_file() else []
        for r in records:
            group = [e for e in [*earlier, *records] if _family_key(e) == _family_key(r)]
            er = M.effective_robustness(group)
            if er is not None:  # this model's own distance from each line
                i = er["models"].index(r["model"])
                for space in ("linear", "logit"):
                    er[space]["this_model"] = er[space]["effective_robustness"][i]
            r["effective_robustness"] = er
    append_records(results_path, records)
    return records
