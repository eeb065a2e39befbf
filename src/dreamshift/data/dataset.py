"""The dataset directory every stage reads and writes (DESIGN.md, "Data contract").

::

    <dataset>/dataset.json        schema version, resolved config, label maps, group counts
    <dataset>/manifest.parquet    one row per sample (written when every shard is done)
    <dataset>/shards/00000/       image files
    <dataset>/shards/00000.parquet  the shard's rows
    <dataset>/shards/00000.done   JSON stats; written last, after images and rows are durable

>>> DatasetLayout("out/paste").shard_done(3).as_posix()
'out/paste/shards/00003.done'
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dreamshift.data.images import write_atomic
from dreamshift.data.schema import DATASET_JSON, SCHEMA_VERSION, DatasetMeta
from dreamshift.errors import DreamshiftError

__all__ = ["DATASET_JSON", "SCHEMA_VERSION", "DatasetMeta"]  # read with the layout
LOCK = ".lock"  # the running writer's lock, kept inside only when the parent is not writable
MANIFEST = "manifest.parquet"
OK, FAILED, FLAGGED = "ok", "failed", "flagged"  # flagged: made, but unusable (black)

# split names, in the order a composed dataset lists them. "anti" holds every class on every
# background but its assigned one; "spurious" holds backgrounds alone (fg_class is None);
# "conflict" holds one class's shape in another class's coat (coat_class names it).
TRAIN, VAL, TEST, ANTI, SPURIOUS, CONFLICT = "train", "val", "test", "anti", "spurious", "conflict"
SPLITS = (TRAIN, VAL, TEST, ANTI, SPURIOUS, CONFLICT)

MANIFEST_SCHEMA = pa.schema(
    [
        # identity
        ("sample_id", pa.string()),
        ("index", pa.int64()),
        ("split", pa.string()),
        ("status", pa.string()),  # "ok" | "failed" | "flagged"
        ("error", pa.string()),  # why a sample failed, naming the file
        ("path", pa.string()),  # relative to the dataset directory
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        # labels
        ("fg_class", pa.string()),
        ("bg_class", pa.string()),
        ("aligned", pa.bool_()),  # bg_class is the class's assigned (spurious) background
        # composition
        ("fg_source", pa.string()),
        ("mask_source", pa.string()),
        ("bg_source", pa.string()),
        ("box_x", pa.int32()),
        ("box_y", pa.int32()),
        ("box_w", pa.int32()),
        ("box_h", pa.int32()),
        ("scale", pa.float64()),
        ("appearance", pa.string()),  # JSON of drawn appearance/augmentation parameters
        ("coat_class", pa.string()),  # whose typical coat the animal wears; null: random coat
        ("render", pa.string()),  # "paste" (a naive cut-out) | "photo" (lit by its scene)
        # generation
        ("pipeline", pa.string()),  # "paste" (guides, copies) | "img2img" | "txt2img"
        ("seed", pa.int64()),  # per-sample seed = derive_seed(run seed, sample_id)
        ("model_id", pa.string()),  # as given: a local folder or a hub id
        ("model_sha256", pa.string()),  # of every file of the model folder
        ("adapters", pa.string()),  # JSON: the LoRAs applied to this sample (path, sha256, scale)
        ("scheduler", pa.string()),  # class name, e.g. "DDIMScheduler"
        ("scheduler_config", pa.string()),  # JSON, enough to rebuild it with from_config
        ("steps", pa.int32()),
        ("strength", pa.float64()),  # img2img only
        ("guidance_scale", pa.float64()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("prompt_template", pa.string()),  # the recipe template the prompt was filled from
        ("guide_sample_id", pa.string()),  # the source row this sample was made from
        ("guide_sha256", pa.string()),
        ("runtime", pa.string()),  # JSON: device, dtype, threads, batch_invariant
        ("versions", pa.string()),  # JSON: torch, diffusers, transformers, dreamshift, ...
        # quality
        ("flag", pa.string()),  # "black" | "blank" | null; such samples have status "flagged"
    ]
)


class DatasetLayout:
    """Paths inside a dataset directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def json_path(self) -> Path:
        return self.root / DATASET_JSON

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def shard_name(self, shard: int) -> str:
        return f"{shard:05d}"

    def shard_dir(self, shard: int) -> Path:
        return self.root / "shards" / self.shard_name(shard)

    def shard_rows(self, shard: int) -> Path:
        return self.root / "shards" / f"{self.shard_name(shard)}.parquet"

    def shard_done(self, shard: int) -> Path:
        return self.root / "shards" / f"{self.shard_name(shard)}.done"


def table_from_rows(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """The manifest table of ``rows``; a column a row leaves out is null, a key that is not a
    column is refused by name (a misspelt key would otherwise vanish silently)."""
    columns = set(MANIFEST_SCHEMA.names)
    for r in rows:
        unknown = sorted(set(r) - columns)
        if unknown:
            raise ValueError(f"manifest row {r.get('sample_id')!r} has unknown column(s) {unknown}")
    cols = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    return pa.table(cols, schema=MANIFEST_SCHEMA)


def write_table_atomic(table: pa.Table, path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(path, buf.getvalue())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_shard(
    layout: DatasetLayout, shard: int, rows: Sequence[dict[str, Any]], stats: dict
) -> None:
    """Make a finished shard durable: its rows first, then the done marker."""
    write_table_atomic(table_from_rows(rows), layout.shard_rows(shard))
    write_json_atomic(layout.shard_done(shard), stats)


def shard_is_done(layout: DatasetLayout, shard: int) -> bool:
    return layout.shard_done(shard).exists() and layout.shard_rows(shard).exists()


def prepare_output(
    root: Path,
    meta: DatasetMeta,
    normalise: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d,
) -> DatasetMeta | None:
    """Check that ``root`` is new or holds an unfinished run of the same config; write
    ``meta`` as its dataset.json unless that run is complete. Returns the existing metadata
    (None for a new dataset). Never touches a folder that is not a dataset of this config.
    Configs are compared after ``normalise`` (e.g. filling in defaults, so that a dataset
    written before a field existed still matches)."""
    layout = DatasetLayout(root)
    if layout.json_path.exists():
        old = DatasetMeta.read(root)
        if normalise(old.config) != normalise(meta.config):
            new_cfg, old_cfg = normalise(meta.config), normalise(old.config)
            diff = sorted(
                k for k in new_cfg.keys() | old_cfg.keys() if new_cfg.get(k) != old_cfg.get(k)
            )
            raise DreamshiftError(
                f"{root} holds a dataset made with a different config (differs in {diff}): "
                "choose another --out or delete that folder"
            )
        if old.complete:
            return old
    elif root.exists() and (
        not root.is_dir() or {p.name for p in root.iterdir()} - {DATASET_JSON + ".tmp", LOCK}
    ):  # a run killed while writing its first dataset.json leaves only that .tmp file
        raise DreamshiftError(
            f"{root} exists and is not a dreamshift dataset: choose another --out"
        )
    else:
        old = None
    root.mkdir(parents=True, exist_ok=True)
    write_meta(layout, meta)
    return old


def write_meta(layout: DatasetLayout, meta: DatasetMeta) -> None:
    write_json_atomic(layout.json_path, meta.to_dict())


def read_manifest(root: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of a dataset: ``manifest.parquet``, or the done shards of an unfinished run;
    ``columns``: only those (a training run reads 7 of the ~40, not the prompts and JSON)."""
    layout = DatasetLayout(root)
    meta = DatasetMeta.read(root)
    names = list(columns) if columns is not None else None
    if layout.manifest_path.exists():
        return pq.read_table(layout.manifest_path, schema=MANIFEST_SCHEMA, columns=names)
    parts = [
        pq.read_table(layout.shard_rows(k), schema=MANIFEST_SCHEMA, columns=names)
        for k in range(meta.num_shards or 0)
        if shard_is_done(layout, k)
    ]
    empty = MANIFEST_SCHEMA.empty_table()
    return pa.concat_tables(parts) if parts else empty.select(names) if names else empty


def consolidate_manifest(layout: DatasetLayout, num_shards: int) -> pa.Table:
    """Concatenate every shard's rows, in shard order, into ``manifest.parquet``."""
    parts = [pq.read_table(layout.shard_rows(k), schema=MANIFEST_SCHEMA) for k in range(num_shards)]
    table = pa.concat_tables(parts) if parts else MANIFEST_SCHEMA.empty_table()
    write_table_atomic(table, layout.manifest_path)
    return table
