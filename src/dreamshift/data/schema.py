"""``dataset.json`` as a typed, frozen record: what every stage writes about a dataset directory
and every reader needs (its classes and backgrounds, the recipe that planned its splits, the
runtime a dream ran with), instead of ``.get("config", {}).get(...)`` chains over a dict.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamshift.errors import DreamshiftError

SCHEMA_VERSION = 2
DATASET_JSON = "dataset.json"


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
        fields = dict(d)
        fields["classes"] = tuple(d.get("classes") or ())
        fields["backgrounds"] = tuple(d.get("backgrounds") or ())
        try:
            fields["splits"] = {s: SplitCounts(**v) for s, v in (d.get("splits") or {}).items()}
            return cls(**fields)
        except TypeError as exc:
            raise DreamshiftError(f"{where}: a field has the wrong form ({exc})") from exc

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


def _codes(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}
