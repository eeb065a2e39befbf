"""The shard engine: a planned run cut into shards, run on an executor, resumed, consolidated.

A stage plans every sample, cuts the list into shards (:func:`shard_list`), runs those not
yet done (:func:`unfinished`) with :func:`run_shards`, and ends with :func:`finish`. Its
per-shard function makes the shard's images through a :class:`ShardWriter` (PNG files, their
sha256, then the rows and the ``.done`` marker once the images are on disk): a shard is durable
once marked, so a killed or failed run continues from the unmarked ones, and the result does
not depend on the executor or the shard order.

>>> shard_list(list(range(5)), 2)
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Sized
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from tqdm import tqdm

import dreamshift
from dreamshift.data import dataset as ds
from dreamshift.data.images import encode_png, flush_to_disk, sha256_bytes
from dreamshift.engine.executors import Executor

S = TypeVar("S")
T = TypeVar("T")
W = TypeVar("W", bound=Sized)

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

    def close(self, rows: Sequence[ds.SampleRow], **stats: Any) -> dict[str, Any]:
        """Flush the images, then write the rows and the ``.done`` marker with the shard's
        count, failures and seconds (and ``stats``); returns the marker's content."""
        flush_to_disk()
        done = {"shard": self.shard, "count": len(rows),
                "failed": sum(r.status == ds.FAILED for r in rows),
                "seconds": round(time.perf_counter() - self.start, 3), **stats}  # fmt: skip
        ds.write_shard(self.layout, self.shard, rows, done)
        return done


def unfinished(layout: ds.DatasetLayout, num_shards: int) -> list[int]:
    """The shards without a ``.done`` marker: what a resumed run still has to make."""
    return [k for k in range(num_shards) if not ds.shard_is_done(layout, k)]


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
