"""``dreamshift export DATASET --format hf|webdataset|imagefolder --out DIR``.

- ``hf``: one Parquet file per split under ``data/`` with an ``image`` and a ``mask`` column
  in the Hugging Face ``Image`` layout (``{bytes, path}``; ``mask`` null where a row has none),
  ``label`` (a ``ClassLabel`` of the classes; -1 for a background alone), ``background`` (a
  ``ClassLabel``) and every manifest column: ``datasets.load_dataset(DIR)`` or
  ``load_dataset("parquet", data_files=...)`` reads it;
- ``webdataset``: tar shards ``{split}-00000.tar`` of ``KEY.png`` + ``KEY.mask.png`` (where the
  row has a mask) + ``KEY.json`` (the manifest row with ``label`` and ``background``
  indices), read by the ``webdataset`` library (``sample["mask.png"]``);
- ``imagefolder``: ``{split}/{class}/FILE.png``, its mask ``FILE.mask.png`` beside it, and a
  ``{split}/metadata.parquet`` with ``file_name``, ``mask_file_name`` (null where none) and
  every manifest column (the layout of HF's ``imagefolder`` loader, which reads
  ``mask_file_name`` as an Image column ``mask``; ``datasets`` >= 3.4 reads Parquet metadata).

Each format gets the dataset card ``README.md`` (:mod:`dreamshift.export.card`): its
``configs`` map every split to its files, so ``datasets.load_dataset(DIR)`` returns each split
under its own name (``val``, ``anti``, ``spurious``... included); for ``imagefolder`` it also
declares every column's feature (``label`` and ``background`` as ClassLabels), which its
loader would not infer.

Masks are the dataset's object masks (``mask_path``: a 1-bit PNG, white = the object); a row
without one (a background alone, an ``img2img`` or ``txt2img`` dream, a dataset made before
masks) has none in the export either. Images and masks are copied byte for byte (no
re-encoding). The verification table's columns, when there is one, travel with the rows,
except ``votes`` (reviewers' names and answers: the counts ``votes_yes`` ... go). Only usable
rows (status ok) are exported.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dreamshift.data import dataset as ds
from dreamshift.data import verification as vt
from dreamshift.data.masks import MASK_SUFFIX
from dreamshift.engine.output import claim_output
from dreamshift.errors import DreamshiftError
from dreamshift.export.card import class_label, write_card

FORMATS = ("hf", "webdataset", "imagefolder")
PRIVATE = ("votes",)  # who voted what: reviewers' names stay with the dataset, not in exports
SHARD_IMAGES = 10_000  # webdataset: images per tar shard
ROW_GROUP = 1_000  # hf: images per Parquet row group, the most held in memory at once
DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.int32(): "int32",
          pa.float64(): "float64", pa.bool_(): "bool", pa.float32(): "float32"}  # fmt: skip
Written = tuple[dict[str, int], list[dict[str, Any]] | None]  # counts per split, card features


def export_rows(root: Path) -> dict[str, list[dict[str, Any]]]:
    """The usable rows of ``root`` by split (manifest order), with ``label`` and
    ``background`` indices and the verification table's columns."""
    meta = ds.DatasetMeta.read(root)
    classes, backgrounds = list(meta.classes), list(meta.backgrounds)
    extra: dict[str, dict[str, Any]] = {}
    blank: dict[str, Any] = {}  # every verification column on every row (null where unset)
    table = vt.read_table(root)
    if table is not None:
        keep = [c for c in table.column_names if c not in PRIVATE]
        blank = dict.fromkeys(c for c in keep if c != "sample_id")
        extra = {r.pop("sample_id"): r for r in table.select(keep).to_pylist()}
    out: dict[str, list[dict[str, Any]]] = {}
    for r in ds.read_manifest(root).to_pylist():
        if r["status"] != ds.OK:
            continue
        row = {**r, **blank, **extra.get(r["sample_id"], {})}
        row["label"] = classes.index(r["fg_class"]) if r["fg_class"] in classes else -1
        row["background"] = backgrounds.index(r["bg_class"]) if r["bg_class"] in backgrounds else -1
        out.setdefault(r["split"], []).append(row)
    if not out:
        raise DreamshiftError(f"{root} has no usable rows to export")
    return out


def _read(root: Path, relative: str) -> bytes:
    """The bytes of a sample's file (image or mask) named by its manifest row."""
    path = root / relative
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DreamshiftError(
            f"cannot read {path} ({exc.strerror or exc}): restore it, or run the command that "
            f"made {root} again"
        ) from exc


def _prepare_out(out: Path) -> Path:
    """Check ``out``, remove what killed exports into it left, and return the hidden folder
    beside it to write into (mode 0777 less the umask, as ``mkdir`` makes, not mkdtemp's 0700)."""
    if out.exists() and not out.is_dir():
        raise DreamshiftError(f"--out {out} is a file: name a new folder to export into")
    if out.is_dir() and any(out.iterdir()):
        raise DreamshiftError(f"--out {out} is not empty: export into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # an export killed before its rename
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o777 & ~umask)
    return partial


def _features(meta: ds.DatasetMeta, schema: pa.Schema) -> dict[str, Any]:
    """The ``datasets`` Features of an exported table, as its Parquet metadata states them."""
    features: dict[str, Any] = {}
    for f in schema:
        if f.name in ("image", "mask"):
            features[f.name] = {"_type": "Image"}
        elif f.name == "label":
            features[f.name] = {"names": list(meta.classes), "_type": "ClassLabel"}
        elif f.name == "background":
            features[f.name] = {"names": list(meta.backgrounds), "_type": "ClassLabel"}
        else:
            features[f.name] = {"dtype": DTYPES.get(f.type, "string"), "_type": "Value"}
    return features


def export_hf(root: Path, out: Path) -> Written:
    meta = ds.DatasetMeta.read(root)
    splits = export_rows(root)
    (out / "data").mkdir()
    types = _column_types(splits)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image_type), ("mask", image_type), *types.items()])
    features = _features(meta, schema)
    schema = schema.with_metadata(
        {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    )
    counts = {}
    for split, rows in splits.items():
        path = out / "data" / f"{split}-00000-of-00001.parquet"
        with pq.ParquetWriter(path, schema) as writer:  # images read a row group at a time
            for start in range(0, len(rows), ROW_GROUP):
                part = rows[start : start + ROW_GROUP]
                images = [{"bytes": _read(root, r["path"]),
                           "path": Path(r["path"]).name} for r in part]  # fmt: skip
                masks = [{"bytes": _read(root, r["mask_path"]), "path": Path(r["mask_path"]).name}
                         if r["mask_path"] else None for r in part]  # fmt: skip
                columns = [pa.array(images, image_type), pa.array(masks, image_type)]
                columns += [pa.array([r[n] for r in part], t) for n, t in types.items()]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        counts[split] = len(rows)
    return counts, None  # the Parquet files state their features


def export_webdataset(root: Path, out: Path) -> Written:
    counts = {}
    for split, rows in export_rows(root).items():
        for start in range(0, len(rows), SHARD_IMAGES):
            name = out / f"{split}-{start // SHARD_IMAGES:05d}.tar"
            with tarfile.open(name, "w") as tar:
                for r in rows[start : start + SHARD_IMAGES]:
                    key = r["sample_id"].replace(".", "_")
                    suffix = Path(r["path"]).suffix.lstrip(".") or "png"
                    _add(tar, f"{key}.{suffix}", _read(root, r["path"]))
                    if r["mask_path"]:
                        _add(tar, f"{key}{MASK_SUFFIX}", _read(root, r["mask_path"]))
                    _add(tar, f"{key}.json", json.dumps(r, sort_keys=True).encode())
        counts[split] = len(rows)
    return counts, None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # reproducible archives
    tar.addfile(info, io.BytesIO(data))


def export_imagefolder(root: Path, out: Path) -> Written:
    meta = ds.DatasetMeta.read(root)
    splits = export_rows(root)
    types = {"file_name": pa.string(), "mask_file_name": pa.string(), **_column_types(splits)}
    schema = pa.schema(list(types.items()))
    counts = {}
    for split, rows in splits.items():
        (out / split).mkdir()
        listed = []
        for r in rows:
            folder = r["fg_class"] or "_background_only"
            file_name = f"{folder}/{Path(r['path']).name}"
            (out / split / folder).mkdir(exist_ok=True)
            shutil.copyfile(root / r["path"], out / split / file_name)
            mask_name = None
            if r["mask_path"]:  # beside its image: FILE.mask.png
                mask_name = f"{folder}/{Path(r['path']).stem}{MASK_SUFFIX}"
                (out / split / mask_name).write_bytes(_read(root, r["mask_path"]))
            listed.append({**r, "file_name": file_name, "mask_file_name": mask_name})
        # Parquet, not JSON lines: one typed schema in every split (a column all null in one
        # split, such as `aligned` in `spurious`, would read as another type and stop the load)
        pq.write_table(
            pa.Table.from_pylist(listed, schema=schema), out / split / "metadata.parquet"
        )
        counts[split] = len(rows)
    return counts, _yaml_features(meta, types)


def _column_types(splits: dict[str, list[dict[str, Any]]]) -> dict[str, pa.DataType]:
    """One Arrow type per exported column across every split (a column null in one split takes
    its type from the others), or `datasets` refuses to read the splits together."""
    every = [r for rows in splits.values() for r in rows]
    types = {name: pa.array([r[name] for r in every]).type for name in every[0]}
    types.update(label=pa.int64(), background=pa.int64())
    return {name: pa.string() if kind == pa.null() else kind for name, kind in types.items()}


def _yaml_features(meta: ds.DatasetMeta, types: dict[str, pa.DataType]) -> list[dict[str, Any]]:
    """Every column's ``datasets`` feature (:func:`_features`) in the card's YAML form:
    ``image`` and ``mask`` (imagefolder's loader reads ``file_name`` and ``mask_file_name`` as
    them), ``label`` and ``background`` as ClassLabels, the rest by their Arrow type."""
    named = [(n, t) for n, t in types.items() if n not in ("file_name", "mask_file_name")]
    schema = pa.schema([("image", pa.binary()), ("mask", pa.binary()), *named])
    out = []
    for name, feature in _features(meta, schema).items():
        kind = feature["_type"]
        dtype = ("image" if kind == "Image" else class_label(feature["names"])
                 if kind == "ClassLabel" else feature["dtype"])  # fmt: skip
        out.append({"name": name, "dtype": dtype})
    return out


def export(dataset: str | Path, out: str | Path, fmt: str) -> dict[str, int]:
    """Export the usable rows of ``dataset`` into ``out`` (a new or empty folder) in ``fmt``;
    returns the image count per split. It is written to a hidden folder beside ``out`` and
    renamed when complete; what an export killed before that left beside ``out`` is removed by
    the next one into it."""
    if fmt not in FORMATS:
        raise DreamshiftError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    root, out = Path(dataset), Path(out)
    meta = ds.DatasetMeta.read(root)
    if not meta.complete:
        raise DreamshiftError(f"{root} is unfinished: run the command that made it again first")
    writer = {"hf": export_hf, "webdataset": export_webdataset,
              "imagefolder": export_imagefolder}[fmt]  # fmt: skip
    with claim_output(out):  # a second export into out stops at once, naming this one
        partial = _prepare_out(out)
        try:
            counts, features = writer(root, partial)
            write_card(root, partial, counts, fmt, features, final_name=out.name)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if out.is_dir():
            out.rmdir()
        os.replace(partial, out)  # complete, or not there
    return counts
