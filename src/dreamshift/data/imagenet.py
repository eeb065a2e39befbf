"""ImageNet's classes by WordNet id: names for an ImageNet-style folder tree
(``train/<wnid>/*.JPEG``) and WordNet definitions for prompts (D3S's template names the class
and its definition).

The table comes from a package that ships it, read as data files without importing it: timm
(Apache-2.0) ships ImageNet-1k's 1 000 synsets with their WordNet lemmas and glosses
(``timm/data/_info``; WordNet is Princeton's, under the WordNet licence). Or from your own file,
a TSV of ``wnid<TAB>name<TAB>definition`` lines.

A class is named by its first lemma; lemmas ImageNet-1k uses twice (``crane`` the bird and the
machine, ``maillot``) get their wnid appended.

>>> unique_names({"n1": "crane", "n2": "crane", "n3": "tench"})
{'n1': 'crane_n1', 'n2': 'crane_n2', 'n3': 'tench'}
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dreamshift.errors import DreamshiftError

IMAGENET_1K = "imagenet-1k"
WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Synset:
    name: str  # unique among the table's classes
    definition: str


def _timm_info() -> Path:
    spec = importlib.util.find_spec("timm")
    found = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(found[0]) / "data" / "_info" if found else None
    if folder is None or not (folder / "imagenet_synset_to_definition.txt").is_file():
        raise DreamshiftError(
            "ImageNet-1k's class names and WordNet definitions come from timm's data files: "
            "pip install timm (or --no-deps: only its files are read), or give your own TSV "
            "file of wnid<TAB>name<TAB>definition lines"
        )
    return folder


def _two_columns(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, _, value = line.partition("\t")
            out[key.strip()] = value.strip()
    return out


def unique_names(first_lemma: dict[str, str]) -> dict[str, str]:
    """wnid -> its first lemma, with the wnid appended where two classes share it."""
    seen = Counter(first_lemma.values())
    return {w: f"{n}_{w}" if seen[n] > 1 else n for w, n in first_lemma.items()}


def synset_table(source: str = IMAGENET_1K) -> dict[str, Synset]:
    """wnid -> (unique class name, definition): ImageNet-1k's from timm's files, or a TSV file's."""
    if source == IMAGENET_1K:
        info = _timm_info()
        wnids = [w for w in (info / "imagenet_synsets.txt").read_text().split() if w]
        lemmas = _two_columns(info / "imagenet_synset_to_lemma.txt")
        glosses = _two_columns(info / "imagenet_synset_to_definition.txt")
        first = {w: lemmas[w].split(",")[0].strip() for w in wnids}
        names = unique_names(first)
        return {w: Synset(names[w], glosses.get(w, "")) for w in wnids}
    path = Path(source)
    if not path.is_file():
        raise DreamshiftError(
            f"class table {path} does not exist: give {IMAGENET_1K} or a TSV file of "
            "wnid<TAB>name<TAB>definition lines"
        )
    table = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise DreamshiftError(
                f"{path} line {n}: expected wnid<TAB>name[<TAB>definition], got {line!r}"
            )
        table[parts[0]] = Synset(parts[1], parts[2] if len(parts) > 2 else "")
    counts = Counter(s.name for s in table.values())
    repeated = sorted(n for n, k in counts.items() if k > 1)
    if repeated:
        raise DreamshiftError(f"{path} names several wnids {repeated}: class names must be unique")
    return table
