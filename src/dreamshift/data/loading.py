"""Which images a stage reads, and reading them: usable rows of a split, an
:class:`ImageTable` (the images of one or several splits by reference, what the streaming
loader of :mod:`dreamshift.data.torch_dataset` reads from), the training sources of a run
(:func:`training_sources`: mixes, weights, nested subsets), batches decoded ahead in threads
(audit, verify, tune), and small splits in memory (probes). Every image is read by
:func:`~dreamshift.data.images.read_checked`, against the sha256 its manifest records.

>>> rows = [{"status": "ok", "split": "test"}, {"status": "failed", "split": "test"}]
>>> len(usable_rows(rows, "test"))
1
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.data.images import read_checked
from dreamshift.data.masks import read_mask
from dreamshift.data.verification import verified_ids
from dreamshift.errors import BadInputError, DreamshiftError


def usable_rows(manifest: list[dict[str, Any]], split: str | None) -> list[dict[str, Any]]:
    """The rows of ``manifest`` (``read_manifest(...).to_pylist()``) with status ok in
    ``split``; no split: every split but the probes ``spurious``, ``conflict``, ``size`` and
    ``position`` (:data:`~dreamshift.data.dataset.PROBES`: no sample of their labels'
    distribution, or copies of the test split's)."""
    probes = ds.PROBES
    return [
        r
        for r in manifest
        if r["status"] == ds.OK and (r["split"] == split if split else r["split"] not in probes)
    ]


def _decode(root: Path, row: dict[str, Any]) -> np.ndarray | str:
    try:
        return read_checked(root / row["path"], row.get("sha256") or "",
                            f"restore it, or re-run the command that made {root}")  # fmt: skip
    except BadInputError as exc:
        return str(exc)


def iter_batches(
    root: Path, rows: Sequence[dict[str, Any]], batch_size: int, threads: int = 1
) -> Iterator[tuple[list[int], np.ndarray | None, list[tuple[int, str]]]]:
    """(row positions, (B, H, W, 3) uint8 images, unreadable (position, reason)) per batch; the
    next batch is decoded in threads while the caller runs the current one."""

    def load(start: int) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
        positions = list(range(start, min(start + batch_size, len(rows))))
        decoded = list(pool.map(lambda i: _decode(root, rows[i]), positions))
        ok = [(i, a) for i, a in zip(positions, decoded, strict=True) if not isinstance(a, str)]
        bad = [(i, a) for i, a in zip(positions, decoded, strict=True) if isinstance(a, str)]
        if len({a.shape for _, a in ok}) > 1:  # mixed sizes: all to the first one's
            h, w = ok[0][1].shape[:2]
            ok = [(i, np.asarray(Image.fromarray(a).resize((w, h)))) for i, a in ok]
        images = np.stack([a for _, a in ok]) if ok else None
        return [i for i, _ in ok], images, bad

    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(1) as ahead:
        starts = list(range(0, len(rows), batch_size))
        pending = ahead.submit(load, starts[0]) if starts else None
        for k in range(len(starts)):
            assert pending is not None
            batch = pending.result()
            pending = ahead.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
            yield batch


def load_split(
    root: Path, split: str, classes: list[str], backgrounds: list[str], verified_only: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, H, W, 3) uint8, class index (N,), background index (N,)) of the usable rows
    of one split, in memory; ``verified_only``: of those that passed review only. For small
    splits (probes, the eraser's fit); training and evaluation stream (:mod:`.torch_dataset`)."""
    table = split_table(root, split, classes, backgrounds, verified_only)
    return decode_table(table), table.y, table.bg


MIXES = ("concat", "weighted")  # how several training sources are drawn from
KINDS = ("all", "real", "generated")  # which training sources a run uses


def nested_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of ``size`` examples, as balanced over the classes as they allow, in an order
    fixed by ``seed``: the ``size`` of a smaller run are among those of a larger one, as a
    family of models trained on growing subsets of one set wants (Taori et al. 2020).

    >>> nested_subset(torch.tensor([0, 0, 0, 1, 1, 1]), 2, seed=0).tolist()  # one of each
    [2, 5]
    >>> set(nested_subset(torch.tensor([0, 0, 0, 1]), 2, 0).tolist()) <= set(
    ...     nested_subset(torch.tensor([0, 0, 0, 1]), 3, 0).tolist())
    True
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    rank = torch.empty(len(labels), dtype=torch.long)  # each example's place within its class
    for k in labels.unique():
        members = order[labels[order] == k]
        rank[members] = torch.arange(len(members))
    position = torch.empty(len(labels), dtype=torch.long)
    position[order] = torch.arange(len(labels))
    chosen = sorted(range(len(labels)), key=lambda i: (int(rank[i]), int(position[i])))[:size]
    return torch.tensor(sorted(chosen), dtype=torch.long)


def parse_source(text: str) -> tuple[str, str, float | None]:
    """``DIR[:SPLIT][@WEIGHT]`` -> (DIR, SPLIT or "", WEIGHT or None).

    >>> parse_source("data/dreams:test@0.5")
    ('data/dreams', 'test', 0.5)
    """
    path, weight = text, None
    head, sep, tail = text.rpartition("@")
    if sep:
        try:
            path, weight = head, float(tail)
        except ValueError:
            pass  # an @ that is part of the path
        else:
            if weight <= 0:
                raise DreamshiftError(f"--train {text}: the weight {weight} must be > 0")
    split = ""
    if not Path(path).exists() and ":" in path:
        path, _, split = path.rpartition(":")
    return path, split, weight


def source_key(text: str, split: str) -> list[Any]:
    """What identifies a training source ``DIR[:SPLIT][@WEIGHT]`` for run names: its content
    hash (its path when it has none or is not there: loading it then says why), its split
    (``split`` when it names none) and its weight."""
    path, named_split, weight = parse_source(text)
    meta_path = Path(path) / ds.DATASET_JSON
    content = ds.DatasetMeta.read(path).content_hash if meta_path.exists() else None
    return [content or path, named_split or split, weight]


def _bytes(texts: Sequence[str | None]) -> np.ndarray:
    """A flat array of ``texts`` as bytes ('' for None)."""
    return np.array([(t or "").encode() for t in texts], dtype=bytes)


@dataclass(frozen=True)
class ImageTable:
    """The images of one or several (dataset directory, split)s, by reference: where each file
    is, the sha256 the manifest records for it, its class and background index. Held as flat
    arrays, not per-row Python objects, so loader workers forked from the training process share
    its pages instead of copying them as reference counts change, and memory grows by ~100 bytes
    per image, never by its pixels."""

    roots: tuple[Path, ...]  # the dataset directories
    made_by: tuple[str, ...]  # per root: the stage that wrote it (compose, dream, ...)
    source: np.ndarray  # (N,) index into roots
    paths: np.ndarray  # (N,) bytes: path relative to its root
    sha256: np.ndarray  # (N,) bytes: the manifest's sha256 ('' when it records none)
    y: torch.Tensor  # (N,) class index (-1: a background alone)
    bg: torch.Tensor  # (N,) background index
    mask_paths: np.ndarray  # (N,) bytes: the object's mask, relative to its root ('': none)
    mask_sha256: np.ndarray  # (N,) bytes

    @classmethod
    def of_rows(
        cls, root: Path, rows: Sequence[dict[str, Any]], classes: list[str], backgrounds: list[str]
    ) -> ImageTable:
        """The table of ``rows`` (manifest rows of dataset ``root``)."""
        meta = ds.DatasetMeta.read(root)
        class_index = {c: i for i, c in enumerate(classes)}
        bg_index = {b: i for i, b in enumerate(backgrounds)}
        return cls(
            roots=(Path(root),),
            made_by=(meta.stage,),
            source=np.zeros(len(rows), np.int32),
            paths=np.array([r["path"].encode() for r in rows], dtype=bytes),
            sha256=np.array([(r.get("sha256") or "").encode() for r in rows], dtype=bytes),
            y=torch.tensor([class_index.get(r["fg_class"], -1) for r in rows], dtype=torch.long),
            bg=torch.tensor([bg_index[r["bg_class"]] for r in rows], dtype=torch.long),
            mask_paths=_bytes([r.get("mask_path") for r in rows]),
            mask_sha256=_bytes([r.get("mask_sha256") for r in rows]),
        )

    @classmethod
    def concat(cls, tables: Sequence[ImageTable]) -> ImageTable:
        offsets = np.cumsum([0] + [len(t.roots) for t in tables[:-1]])
        return cls(
            roots=tuple(r for t in tables for r in t.roots),
            made_by=tuple(m for t in tables for m in t.made_by),
            source=np.concatenate([t.source + o for t, o in zip(tables, offsets, strict=True)]),
            paths=np.concatenate([t.paths for t in tables]),
            sha256=np.concatenate([t.sha256 for t in tables]),
            y=torch.cat([t.y for t in tables]),
            bg=torch.cat([t.bg for t in tables]),
            mask_paths=np.concatenate([t.mask_paths for t in tables]),
            mask_sha256=np.concatenate([t.mask_sha256 for t in tables]),
        )

    def take(self, keep: torch.Tensor) -> ImageTable:
        idx = keep.numpy()
        return ImageTable(self.roots, self.made_by, self.source[idx], self.paths[idx],
                          self.sha256[idx], self.y[keep], self.bg[keep],
                          self.mask_paths[idx], self.mask_sha256[idx])  # fmt: skip

    def __len__(self) -> int:
        return len(self.y)

    def path(self, i: int) -> Path:
        return self.roots[int(self.source[i])] / self.paths[i].decode()

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as (H, W, 3) uint8, checked against the manifest's sha256; a missing or
        changed file raises :class:`BadInputError` naming it and the command that made it."""
        root = self.roots[int(self.source[i])]
        remedy = (f"restore it, or re-run the `dreamshift {self.made_by[int(self.source[i])]}` "
                  f"command that made {root}")  # fmt: skip
        return read_checked(self.path(i), self.sha256[i].decode(), remedy)

    def read_mask(self, i: int, size: tuple[int, int]) -> np.ndarray:
        """Image ``i``'s object mask, (H, W) bool for ``size`` (width, height), checked against
        the manifest's sha256; all False where it has none. A missing or changed file raises
        :class:`BadInputError` naming it."""
        rel = self.mask_paths[i].decode()
        if not rel:
            return np.zeros(size[::-1], bool)
        root = self.roots[int(self.source[i])]
        remedy = (f"restore it, or re-run the `dreamshift {self.made_by[int(self.source[i])]}` "
                  f"command that made {root}")  # fmt: skip
        return read_mask(root / rel, self.mask_sha256[i].decode() or None, size, remedy)


READ_COLUMNS = ("sample_id", "status", "split", "path", "sha256", "fg_class", "bg_class",
                "mask_path", "mask_sha256")  # fmt: skip


def split_table(
    root: Path,
    split: str,
    classes: list[str],
    backgrounds: list[str],
    verified_only: bool = False,
) -> ImageTable:
    """The usable rows of one split of ``root`` (:func:`usable_rows`; ``verified_only``: those
    that passed review), selected column by column: no Python object per row, even for the
    1.3 M rows of an ImageNet-sized manifest."""
    table = ds.read_manifest(root, READ_COLUMNS)
    probes = pa.array(ds.PROBES)
    in_split = (
        pc.equal(table["split"], split) if split else pc.invert(pc.is_in(table["split"], probes))
    )
    table = table.filter(pc.and_(pc.equal(table["status"], ds.OK), in_split))
    if verified_only:
        keep = pa.array(sorted(verified_ids(root)), pa.string())
        table = table.filter(pc.is_in(table["sample_id"], keep))
    meta = ds.DatasetMeta.read(root)
    y = pc.fill_null(pc.index_in(table["fg_class"], pa.array(classes, pa.string())), -1)
    bg = pc.index_in(table["bg_class"], pa.array(backgrounds, pa.string()))
    if bg.null_count:
        unknown = table["bg_class"].filter(pc.is_null(bg))[0]
        raise DreamshiftError(f"{root}: background {unknown} is not among {backgrounds}")
    return ImageTable(
        roots=(Path(root),),
        made_by=(meta.stage,),
        source=np.zeros(len(table), np.int32),
        paths=np.array([path.encode() for path in table["path"].to_pylist()], dtype=bytes),
        sha256=np.array([h or "" for h in table["sha256"].to_pylist()], dtype=bytes),
        y=torch.from_numpy(y.to_numpy(zero_copy_only=False).astype(np.int64)),
        bg=torch.from_numpy(bg.to_numpy(zero_copy_only=False).astype(np.int64)),
        mask_paths=_bytes(table["mask_path"].to_pylist()),
        mask_sha256=_bytes(table["mask_sha256"].to_pylist()),
    )


@dataclass(frozen=True)
class TrainingSources:
    """The training images of every source, by reference, and how each source counts."""

    table: ImageTable
    sources: list[dict[str, Any]]  # dataset, split, hash, stage, generated, weight, n
    sampling_weights: torch.Tensor | None  # per image; None: each image once per epoch


def decode_table(table: ImageTable) -> torch.Tensor:
    """Every image of ``table`` in memory, (N, H, W, 3) uint8 (one size: the first's)."""
    if not len(table):
        return torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    images = [table.read(i) for i in range(len(table))]
    h, w = images[0].shape[:2]
    images = [a if a.shape[:2] == (h, w) else np.asarray(Image.fromarray(a).resize((w, h)))
              for a in images]  # fmt: skip
    return torch.from_numpy(np.stack(images))


def training_sources(
    root: Path,
    train: Sequence[str],
    split: str,
    mix: str,
    real_weight: float,
    classes: list[str],
    backgrounds: list[str],
    kind: str = "all",
    size: int = 0,
    verified_only: bool = False,
) -> TrainingSources:
    """The training sources ``train`` (``DIR[:SPLIT][@WEIGHT]``; none: ``root``'s
    ``split``, which is also the split of a source that names none), read from their manifests
    (no image is decoded). Every
    source must have ``root``'s classes and backgrounds. A generated source is one made by
    ``dreamshift dream``; ``kind`` keeps the real or the generated sources only, and ``size``
    cuts each source to that many images (:func:`nested_subset`, seeded by its content);
    ``verified_only`` keeps the images of generated sources that passed review (real ones are
    taken as they are).
    Weights: ``@WEIGHT`` per source (the share of the draws that source
    gets, normalised over the sources), ``mix="weighted"`` (real sources share ``real_weight``
    and generated ones the rest, each in proportion to its size: DataDream's
    λ·loss(real) + (1 − λ)·loss(generated) in expectation); else plain concatenation."""
    specs = [parse_source(t) for t in train] or [(str(root), split, None)]
    tables, sources = list[ImageTable](), list[dict[str, Any]]()
    for path, named_split, weight in specs:
        src = Path(path)
        if not (src / ds.DATASET_JSON).exists():
            raise DreamshiftError(f"--train {path}: not a dataset directory (no {ds.DATASET_JSON})")
        meta = ds.DatasetMeta.read(src)
        for what, theirs, ours in (("classes", meta.classes, classes),
                                   ("backgrounds", meta.backgrounds, backgrounds)):  # fmt: skip
            if list(theirs) != ours:
                differ = sorted(set(theirs) ^ set(ours)) or ["(the order)"]
                raise DreamshiftError(
                    f"--train {path} has other {what} than {root}: {', '.join(differ)} differ; "
                    f"every training source needs the evaluated dataset's {what}"
                )
        source_split = named_split or split
        generated = meta.stage == "dream"
        if kind != "all" and generated != (kind == "generated"):
            continue
        table = split_table(src, source_split, classes, backgrounds, verified_only and generated)
        if len(table) == 0:
            splits = sorted(set(ds.read_manifest(src).column("split").to_pylist()))
            raise DreamshiftError(
                f"{src} has no usable images in split {source_split!r} (it has {splits}): name "
                f"one, --train {src}:SPLIT"
            )
        if bool((table.y < 0).any()):
            raise DreamshiftError(
                f"--train {path}: split {source_split!r} has images of backgrounds alone (no "
                "class among the dataset's): train on a split whose images have classes"
            )
        if size:
            if size > len(table):
                raise DreamshiftError(
                    f"--train {path}: {size} images asked for, but split {source_split!r} has "
                    f"{len(table)}: choose smaller --train-sizes"
                )
            seed = int(hashlib.sha256(str(meta.content_hash or src).encode()).hexdigest()[:8], 16)
            table = table.take(nested_subset(table.y, size, seed))
        tables.append(table)
        sources.append({
            "dataset": str(src.resolve()), "split": source_split,
            "dataset_hash": meta.content_hash, "stage": meta.stage, "generated": generated,
            "weight": weight, "n": len(table), "verified_only": verified_only and generated,
        })  # fmt: skip
    if not tables:
        raise DreamshiftError(
            f"no {kind} training source among --train {' '.join(train)} (a generated one is made "
            "by `dreamshift dream`)"
        )
    weights = None
    if mix == "weighted":
        kinds = {k: sum(s["n"] for s in sources if s["generated"] == k) for k in (False, True)}
        if not all(kinds.values()):
            raise DreamshiftError(
                "--mix weighted needs real and generated training sources (a generated one is "
                "made by `dreamshift dream`); these are all "
                + ("generated" if kinds[True] else "real")
            )
        for s in sources:
            share = (1 - real_weight) if s["generated"] else real_weight
            s["weight"] = share * s["n"] / kinds[s["generated"]]
    if mix == "weighted" or any(s["weight"] is not None for s in sources):
        total = sum(s["weight"] or 1.0 for s in sources)
        for s in sources:
            s["weight"] = (s["weight"] or 1.0) / total
        weights = torch.cat(
            [torch.full((s["n"],), s["weight"] / s["n"], dtype=torch.float64) for s in sources]
        )
    return TrainingSources(ImageTable.concat(tables), sources, weights)
