"""The data contract's two records, typed and frozen: :class:`SampleRow`, one row of a
manifest (the Arrow schema of ``manifest.parquet`` is derived from its fields), and
:class:`DatasetMeta`, a dataset directory's ``dataset.json`` (its classes and backgrounds, the
recipe that planned its splits, the runtime a dream ran with). Stages write and read them
instead of dicts, so a misspelt key is refused by name instead of becoming a null column.

>>> row = SampleRow(sample_id="abc-0000000", index=0, split="test", fg_class="cat")
>>> row.replace(status="ok").status, MANIFEST_SCHEMA.field("fg_class").type
('ok', DataType(string))
>>> SampleRow.from_dict({"sample_id": "abc-0000000", "index": 0, "split": "test",
...                      "fg_clas": "cat"})
Traceback (most recent call last):
ValueError: manifest row 'abc-0000000' has unknown column(s) ['fg_clas']

>>> meta = DatasetMeta.from_dict({"stage": "compose", "content_hash": "abc", "classes": ["cat"],
...     "backgrounds": ["grass"], "num_samples": 1, "config": {"recipe": {"rho": 0.9}}})
>>> meta.classes, meta.recipe["rho"], meta.label_maps["fg_class"]
(('cat',), 0.9, {'cat': 0})
>>> DatasetMeta.from_dict({"stage": "compose", "clases": ["cat"]}, "d/dataset.json")
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: d/dataset.json: unknown key(s) ['clases']; a dataset.json \
holds assignment, backgrounds, classes, complete, config, content_hash, dreamshift_version, \
label_maps, num_failed, num_flagged, num_samples, num_shards, rho, schema_version, splits, \
stage, versions
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dreamshift.errors import DreamshiftError

SCHEMA_VERSION = 2
DATASET_JSON = "dataset.json"


def _column(arrow_type: pa.DataType, default: Any = None) -> Any:
    return field(default=default, metadata={"arrow": arrow_type})


@dataclass(frozen=True, kw_only=True)
class SampleRow:
    """One sample of a dataset directory: a row of its manifest. Every stage writes the same
    columns (a dream carries its guide's labels and layout); what a stage does not make stays
    null. Field order is column order."""

    # identity
    sample_id: str = _column(pa.string(), "")
    index: int = _column(pa.int64(), 0)
    split: str = _column(pa.string(), "")
    status: str | None = _column(pa.string())  # "ok" | "failed" | "flagged"
    error: str | None = _column(pa.string())  # why a sample failed, naming the file
    path: str | None = _column(pa.string())  # relative to the dataset directory
    sha256: str | None = _column(pa.string())
    width: int | None = _column(pa.int32())
    height: int | None = _column(pa.int32())
    # labels
    fg_class: str | None = _column(pa.string())
    bg_class: str | None = _column(pa.string())
    aligned: bool | None = _column(pa.bool_())  # bg_class is the class's assigned background
    # composition
    fg_source: str | None = _column(pa.string())
    mask_source: str | None = _column(pa.string())
    bg_source: str | None = _column(pa.string())
    box_x: int | None = _column(pa.int32())
    box_y: int | None = _column(pa.int32())
    box_w: int | None = _column(pa.int32())
    box_h: int | None = _column(pa.int32())
    scale: float | None = _column(pa.float64())
    # the object's mask: a 1-bit PNG beside the image, white = the object (see data/masks.py);
    # null in datasets of dreamshift 0.x before masks, and where no object is kept
    mask_path: str | None = _column(pa.string())
    mask_sha256: str | None = _column(pa.string())
    appearance: str | None = _column(pa.string())  # JSON of drawn appearance parameters
    coat_class: str | None = _column(pa.string())  # whose typical coat; null: random coat
    render: str | None = _column(pa.string())  # "paste" (a naive cut-out) | "photo" (lit)
    # generation
    pipeline: str | None = _column(pa.string())  # "paste" (guides, copies) | a dream mode
    seed: int | None = _column(pa.int64())  # per-sample seed = derive_seed(run seed, sample_id)
    model_id: str | None = _column(pa.string())  # as given: a local folder or a hub id
    model_sha256: str | None = _column(pa.string())  # of every file of the model folder
    adapters: str | None = _column(pa.string())  # JSON: the LoRAs applied (path, sha256, scale)
    scheduler: str | None = _column(pa.string())  # class name, e.g. "DDIMScheduler"
    scheduler_config: str | None = _column(pa.string())  # JSON, to rebuild it with from_config
    steps: int | None = _column(pa.int32())
    strength: float | None = _column(pa.float64())  # img2img, inpaint, harmonize, remove
    feather: int | None = _column(pa.int32())  # inpaint, harmonize, remove: restore's band
    grow: int | None = _column(pa.int32())  # inpaint, harmonize, remove: the redrawn band
    guidance_scale: float | None = _column(pa.float64())
    prompt: str | None = _column(pa.string())
    negative_prompt: str | None = _column(pa.string())
    prompt_template: str | None = _column(pa.string())  # the recipe template it was filled from
    guide_sample_id: str | None = _column(pa.string())  # the source row it was made from
    guide_sha256: str | None = _column(pa.string())
    runtime: str | None = _column(pa.string())  # JSON: device, dtype, threads, batch_invariant
    versions: str | None = _column(pa.string())  # JSON: torch, diffusers, dreamshift, ...
    # quality
    flag: str | None = _column(pa.string())  # "black" | "blank" | null (status "flagged")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampleRow:
        """The row of ``d``; a key that is not a column is refused by name."""
        unknown = sorted(set(d) - _COLUMNS)
        if unknown:
            raise ValueError(f"manifest row {d.get('sample_id')!r} has unknown column(s) {unknown}")
        return cls(**d)

    @classmethod
    def of_table(cls, table: pa.Table) -> list[SampleRow]:
        """The rows of a manifest table (columns it lacks are null)."""
        return [cls(**d) for d in table.to_pylist()]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MANIFEST_SCHEMA.names}

    def replace(self, **changes: Any) -> SampleRow:
        return dataclasses.replace(self, **changes)


MANIFEST_SCHEMA = pa.schema([(f.name, f.metadata["arrow"]) for f in dataclasses.fields(SampleRow)])
_COLUMNS = frozenset(MANIFEST_SCHEMA.names)


def manifest_table(rows: Sequence[SampleRow]) -> pa.Table:
    """The manifest table of ``rows``."""
    cols = {name: [getattr(r, name) for r in rows] for name in MANIFEST_SCHEMA.names}
    return pa.table(cols, schema=MANIFEST_SCHEMA)


@dataclass(frozen=True)
class SplitCounts:
    """How many images a split holds, per foreground class and background."""

    num_samples: int
    groups: dict[str, dict[str, int]]  # fg_class -> bg_class -> images

    @classmethod
    def of(cls, groups: dict[str, dict[str, int]]) -> SplitCounts:
        """The counts of a split planned as ``groups``."""
        return cls(sum(sum(by_bg.values()) for by_bg in groups.values()), groups)


@dataclass(frozen=True)
class DatasetMeta:
    """A dataset directory's ``dataset.json``.

    ``config``: the writing stage's config as saved (a compose or dream config; a dream's also
    holds ``resolved``: the model, scheduler and runtime it ran with). ``classes`` and
    ``backgrounds``: the label spaces; integer label codes are positions in them (also
    spelled out in ``label_maps``). ``assignment``: class -> its spurious background.
    ``splits``: planned images per split and group. ``rho``: a dream's guides' confounder
    strength. ``num_failed`` / ``num_flagged``: set when the run completes.
    """

    stage: str = "compose"  # compose, dream, or plan (labels for `dreamshift backgrounds`)
    content_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    label_maps: dict[str, dict[str, int]] = field(default_factory=dict)
    assignment: dict[str, str] = field(default_factory=dict)
    splits: dict[str, SplitCounts] = field(default_factory=dict)
    num_samples: int = 0
    num_shards: int | None = None
    complete: bool = False
    num_failed: int | None = None
    num_flagged: int | None = None
    rho: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    dreamshift_version: str = ""

    def __post_init__(self) -> None:
        if not self.label_maps:  # the codes of a dataset written without them
            maps = {"fg_class": _codes(self.classes), "bg_class": _codes(self.backgrounds)}
            object.__setattr__(self, "label_maps", maps)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = DATASET_JSON) -> DatasetMeta:
        """The record of a parsed ``dataset.json``; an unknown key is refused by name."""
        if not isinstance(d, dict):
            raise DreamshiftError(f"{where} must hold a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise DreamshiftError(
                f"{where}: unknown key(s) {unknown}; a dataset.json holds "
                + ", ".join(sorted(names))
            )
        if d.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise DreamshiftError(
                f"{where} has schema_version {d.get('schema_version')!r}; this dreamshift reads "
                f"{SCHEMA_VERSION}"
            )
        for key, value in d.items():
            wrong = _FORMS[key](value)
            if wrong:
                raise DreamshiftError(f"{where}: {key!r} {wrong} (it is {value!r:.80})")
        for key, check in _CONFIG_FORMS.items():
            value = _at(d.get("config") or {}, key)
            wrong = check(value) if value is not None else ""
            if wrong:
                raise DreamshiftError(f"{where}: 'config.{key}' {wrong} (it is {value!r:.80})")
        fields = dict(d)
        fields["classes"] = tuple(d.get("classes") or ())
        fields["backgrounds"] = tuple(d.get("backgrounds") or ())
        fields["splits"] = {s: SplitCounts(**v) for s, v in (d.get("splits") or {}).items()}
        return cls(**fields)

    @classmethod
    def read(cls, root: str | Path) -> DatasetMeta:
        """The ``dataset.json`` of the dataset directory ``root``."""
        path = Path(root) / DATASET_JSON
        if not path.exists():
            raise DreamshiftError(
                f"{root} is not a dreamshift dataset (no {DATASET_JSON}): make one with "
                "`dreamshift compose --out DIR`"
            )
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DreamshiftError(f"{path} is not valid JSON ({exc})") from exc
        return cls.from_dict(d, str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as written (fields that are None left out)."""
        d = dataclasses.asdict(self)
        d["classes"], d["backgrounds"] = list(self.classes), list(self.backgrounds)
        return {k: v for k, v in d.items() if v is not None}

    def replace(self, **changes: Any) -> DatasetMeta:
        return dataclasses.replace(self, **changes)

    @property
    def recipe(self) -> dict[str, Any]:
        """The shift recipe that planned the splits (``rho``, images per group, ...): a
        composed dataset's own; empty for a dream (its guides hold it; see :attr:`rho`)."""
        recipe: dict[str, Any] = self.config.get("recipe") or {}
        return recipe

    @property
    def resolved(self) -> dict[str, Any]:
        """What a dream resolved before its first image: model path and hash, scheduler, the
        runtime, the guides' hashes (empty for other stages)."""
        resolved: dict[str, Any] = self.config.get("resolved") or {}
        return resolved

    @property
    def runtime(self) -> dict[str, Any] | None:
        """The device, dtype, threads and batch invariance a dream ran with (None: none)."""
        runtime: dict[str, Any] | None = self.resolved.get("runtime")
        return runtime

    @property
    def source(self) -> str:
        """The dataset a dream was made from ('' for a composed one)."""
        return str(self.config.get("source") or "")

    @property
    def confounder_strength(self) -> float | None:
        """rho of the dataset's train split: its own recipe's, or its guides' for a dream."""
        rho = self.recipe.get("rho", self.rho)
        return None if rho is None else float(rho)


# the form of each dataset.json field (and of the config parts readers use): a check returns
# what is wrong, or "" when the value has its form
def _is(kind: type | tuple[type, ...], what: str, optional: bool = False) -> Any:
    def check(v: Any) -> str:
        if optional and v is None:
            return ""
        if kind is bool:
            return "" if isinstance(v, bool) else f"must be {what}"
        ok = isinstance(v, kind) and not isinstance(v, bool)
        return "" if ok else f"must be {what}"

    return check


def _map_of(value_check: Any, what: str) -> Any:
    def check(v: Any) -> str:
        ok = isinstance(v, dict) and all(not value_check(x) for x in v.values())
        return "" if ok else f"must be {what}"

    return check


def _list_of_str(v: Any) -> str:
    ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
    return "" if ok else "must be a list of names"


_COUNTS = _map_of(_is(int, "a count"), "a mapping of names to counts")


def _split_counts(v: Any) -> str:
    ok = (isinstance(v, dict) and set(v) == {"num_samples", "groups"}
          and not _is(int, "")(v["num_samples"])
          and not _map_of(_COUNTS, "")(v["groups"]))  # fmt: skip
    return "" if ok else "must map each split to its num_samples and groups"


_FORMS: dict[str, Any] = {
    "stage": _is(str, "a stage name"), "content_hash": _is(str, "a hash"),
    "config": _is(dict, "a mapping"), "classes": _list_of_str, "backgrounds": _list_of_str,
    "label_maps": _map_of(_COUNTS, "a mapping of label maps"),
    "assignment": _map_of(_is(str, ""), "a mapping of classes to backgrounds"),
    "splits": _map_of(_split_counts, "a mapping of splits to their counts"),
    "num_samples": _is(int, "a count"), "num_shards": _is(int, "a count", optional=True),
    "complete": _is(bool, "true or false"), "num_failed": _is(int, "a count", optional=True),
    "num_flagged": _is(int, "a count", optional=True),
    "rho": _is((int, float), "a number", optional=True),
    "versions": _map_of(_is(str, ""), "a mapping of libraries to versions"),
    "schema_version": _is(int, "a number"), "dreamshift_version": _is(str, "a version"),
}  # fmt: skip
_CONFIG_FORMS: dict[str, Any] = {
    "recipe": _is(dict, "a mapping"), "recipe.rho": _is((int, float), "a number"),
    "resolved": _is(dict, "a mapping"), "resolved.runtime": _is(dict, "a mapping"),
    "source": _is(str, "a path"),
}  # fmt: skip


def _at(config: dict[str, Any], dotted: str) -> Any:
    """``config``'s value at a dotted key; None where a part is missing or not a mapping."""
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _codes(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}
