"""The shard engine: a planned run cut into shards, run on an executor, resumed, consolidated.

A stage (compose, dream; backgrounds through dream) claims its output folder
(:func:`~dreamshift.engine.output.claim_output`), plans every sample, cuts the list into
shards (:func:`shard_list`) and hands them to :func:`run_stage`, the one entry sequence: write
``dataset.json`` (or find the run complete), pick the shards still to make (or, to retry, the
failed samples of done ones), run them with :func:`run_shards`, and :func:`finish` with the
manifest. The stage's per-shard function makes the shard's images through a
:class:`ShardWriter` (PNG files, their sha256, then the rows and the ``.done`` marker once the
images are on disk): a shard is durable once marked, so a killed or failed run continues from
the unmarked ones, and the result does not depend on the executor or the shard order.

>>> shard_list(list(range(5)), 2)
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

import dreamshift
from dreamshift.data import dataset as ds
from dreamshift.data.images import encode_png, flush_to_disk, sha256_bytes
from dreamshift.data.masks import MASK_SUFFIX, encode_mask
from dreamshift.engine.executors import Executor
from dreamshift.errors import DreamshiftError

S = TypeVar("S")
T = TypeVar("T")
W = TypeVar("W", bound=Sized)


class Planned(Protocol):
    """A planned sample: what a stage's shard lists hold."""

    @property
    def sample_id(self) -> str: ...


P = TypeVar("P", bound=Planned)

Tick = Callable[[int], None]  # tick(n): n more samples of the shard are done

# the progress bar of a run, by the pid of the process that shows it: a shard run in that
# process ticks it sample by sample; one run in a worker process is counted when it ends
_BARS: dict[int, tqdm] = {}


def shard_list(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive shards of ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def library_versions(libraries: Sequence[str]) -> dict[str, str]:
    """dreamshift's, Python's and each installed library's version, as a dataset records
    them."""
    out = {"dreamshift": dreamshift.__version__, "python": platform.python_version()}
    for name in libraries:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class ShardWriter:
    """One shard's folder of images, made by a stage's per-shard function: :meth:`write_png`
    each image, then :meth:`close` with the shard's rows, which makes the images durable before
    the rows and the ``.done`` marker that vouch for them."""

    def __init__(self, root: str | Path, shard: int):
        self.root, self.shard = Path(root), shard
        self.layout = ds.DatasetLayout(root)
        folder = self.layout.shard_dir(shard)
        folder.mkdir(parents=True, exist_ok=True)
        self.rel_folder = folder.relative_to(self.root).as_posix()
        self.start = time.perf_counter()

    def write_png(self, sample_id: str, image: Image.Image) -> dict[str, Any]:
        """Write ``image`` as the sample's PNG; the row fields that locate and hash it."""
        data = encode_png(image)
        rel_path = f"{self.rel_folder}/{sample_id}.png"
        with open(self.root / rel_path, "wb") as f:  # the shard is redone unless marked done
            f.write(data)
        return {"path": rel_path, "sha256": sha256_bytes(data), "width": image.width,
                "height": image.height}  # fmt: skip

    def write_mask(self, sample_id: str, mask: np.ndarray) -> dict[str, Any]:
        """Write the boolean object ``mask`` as the sample's 1-bit PNG beside its image; the row
        fields that locate and hash it."""
        data = encode_mask(mask)
        rel_path = f"{self.rel_folder}/{sample_id}{MASK_SUFFIX}"
        with open(self.root / rel_path, "wb") as f:
            f.write(data)
        return {"mask_path": rel_path, "mask_sha256": sha256_bytes(data)}

    def close(
        self, rows: Sequence[ds.SampleRow], keep: Sequence[ds.SampleRow] = (), **stats: Any
    ) -> dict[str, Any]:
        """Flush the images, then write the rows (``keep``: earlier rows of the shard that stay,
        see :class:`ShardWork`) and the ``.done`` marker with the shard's count, failures and
        seconds (and ``stats``); returns the marker's content."""
        if keep:
            rows = sorted([*keep, *rows], key=lambda r: r.index)
        flush_to_disk()
        done = {"shard": self.shard, "count": len(rows),
                "failed": sum(r.status == ds.FAILED for r in rows),
                "seconds": round(time.perf_counter() - self.start, 3), **stats}  # fmt: skip
        ds.write_shard(self.layout, self.shard, rows, done)
        return done


@dataclass(frozen=True)
class ShardWork(Generic[P]):
    """What to make in one shard: its planned samples, and the rows that stay as they are (a
    retry of the shard's failed samples keeps the others)."""

    specs: list[P]
    keep: list[ds.SampleRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.specs)


def shard_work(
    layout: ds.DatasetLayout, shards: Sequence[list[P]], retry_failed: bool = False
) -> dict[int, ShardWork[P]]:
    """The work left: every shard without a ``.done`` marker, and with ``retry_failed`` the
    failed samples of the done ones (their other rows kept)."""
    work: dict[int, ShardWork[P]] = {}
    for k, specs in enumerate(shards):
        if not ds.shard_is_done(layout, k):
            work[k] = ShardWork(specs)
        elif retry_failed:
            table = pq.read_table(layout.shard_rows(k), schema=ds.MANIFEST_SCHEMA)
            rows = ds.SampleRow.of_table(table)
            failed = {r.sample_id for r in rows if r.status == ds.FAILED}
            if failed:
                redo = [s for s in specs if s.sample_id in failed]
                work[k] = ShardWork(redo, [r for r in rows if r.sample_id not in failed])
    return work


@dataclass(frozen=True)
class StageOutcome:
    """How a stage's run ended: rows per status, and the shards it ran (0: already complete)."""

    status: Mapping[str, int]
    shards_run: int


def check_room(root: Path, needed: int) -> None:
    """Stop with one clear line when the disk of ``root`` has less than ``needed`` bytes
    free (with 1 MB for the shard's rows and marker)."""
    needed += 1 << 20
    free = shutil.disk_usage(root).free
    if free < needed:
        raise DreamshiftError(
            f"cannot write to {root}: the disk has {free / 1e6:.1f} MB free, and a shard needs "
            f"about {needed / 1e6:.1f} MB: free some space, then run the same command again"
        )


def run_stage(
    root: Path,
    meta: ds.DatasetMeta,
    shards: Sequence[list[P]],
    run_shard: Callable[[S, int, ShardWork[P], Tick], Any],
    setup: Callable[[], S],
    executor: Executor,
    *,
    desc: str,
    counts: Mapping[str, str],
    retry_failed: bool = False,
    progress: bool = True,
    normalise: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d,
    bytes_per_sample: int = 0,
) -> StageOutcome:
    """Make the dataset ``meta`` describes in ``root``, which the caller holds
    (:func:`~dreamshift.engine.output.claim_output`): write its ``dataset.json`` unless an
    earlier run of the same config completed it (``normalise``: see
    :func:`~dreamshift.data.dataset.prepare_output`), run the shards left (``retry_failed``:
    also the failed samples), then write the manifest and mark it complete with ``counts``
    (see :func:`finish`). ``bytes_per_sample``: what one image may take on disk; a disk without
    room for the largest shard left stops the run before any shard starts (and before a
    stage's model is loaded)."""
    layout = ds.DatasetLayout(root)
    old = ds.prepare_output(root, meta, normalise)  # the first write into root
    if old is not None and old.complete:
        done = Counter({status: getattr(old, name) or 0 for name, status in counts.items()})
        if not retry_failed or not done[ds.FAILED]:
            return StageOutcome(done, 0)
        ds.write_meta(layout, meta)  # incomplete until the retry is done
        layout.manifest_path.unlink(missing_ok=True)  # stale once a shard changes
    work = shard_work(layout, shards, retry_failed)
    if work:
        check_room(root, bytes_per_sample * max(len(w) for w in work.values()))
    total = sum(len(s) for s in shards)
    run_shards(work, run_shard, setup, executor, total=total, desc=desc, progress=progress)
    return StageOutcome(finish(layout, len(shards), meta, counts), len(work))


def run_shards(
    work: Mapping[int, W],
    run_shard: Callable[[S, int, W, Tick], Any],
    setup: Callable[[], S],
    executor: Executor,
    *,
    total: int,
    desc: str,
    progress: bool = True,
) -> None:
    """Run ``run_shard(setup(), shard, work[shard], tick)`` for every shard of ``work`` (shard
    -> what to make in it, ``len`` samples) on ``executor``, with a progress bar over
    ``total`` samples. An exception stops the run: that shard stays unfinished.
    ``run_shard`` and ``setup`` go to worker processes: module-level functions or partials."""
    if not work:
        return
    remaining = sum(len(w) for w in work.values())
    bar = tqdm(
        total=total, initial=total - remaining, unit="img", desc=desc, disable=not progress,
        smoothing=0.1,
    )  # fmt: skip
    _BARS[os.getpid()] = bar
    try:
        with bar:
            fn = functools.partial(_run_one, run_shard)
            for shard, shown in executor.map(setup, fn, list(work.items())):
                bar.update(len(work[shard]) - shown)
    finally:
        del _BARS[os.getpid()]


def _run_one(
    run_shard: Callable[[S, int, W, Tick], Any], state: S, item: tuple[int, W]
) -> tuple[int, int]:
    """Run one shard; returns (shard, samples it showed on the progress bar itself)."""
    shard, work = item
    bar = _BARS.get(os.getpid())
    shown = 0

    def tick(n: int) -> None:
        nonlocal shown
        if bar is not None:
            bar.update(n)
            shown += n

    run_shard(state, shard, work, tick)
    return shard, shown


def finish(
    layout: ds.DatasetLayout, num_shards: int, meta: ds.DatasetMeta, counts: Mapping[str, str]
) -> Counter[str]:
    """Write the manifest from the shards' rows, then mark the dataset complete in its
    ``dataset.json``, with the number of rows of each status in ``counts`` (field -> status,
    e.g. ``{"num_failed": "failed"}``). Returns the rows per status."""
    table = ds.consolidate_manifest(layout, num_shards)
    status = Counter(table.column("status").to_pylist())
    counted = {field: status[s] for field, s in counts.items()}
    ds.write_meta(layout, meta.replace(complete=True, **counted))
    return status
