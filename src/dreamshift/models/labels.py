"""From a model's label space to a dataset's classes (many-to-one).

A dataset class may gather several model outputs, like ImageNet-9 (Xiao et al. 2021) gathers
ImageNet-1k classes into 9 super-classes. The score of a dataset class is the largest logit
among its members, and the prediction is the best-scoring dataset class: the model chooses
among the dataset's classes only.

Each dataset class's members come, in this order, from a YAML/JSON file the user gives
(``{class: [model label names or output indices]}``; it extends the shipped map), from the map
shipped for ImageNet-1k models and the world's classes, or from the output of the same name
(case-insensitive). A dataset class no model output maps to is an error that lists the closest
label names: the accuracy of a class the model cannot name means nothing.

>>> members = {"cat": ["cat", "tabby"], "dog": ["dog"]}
>>> m = LabelMap.build(("cat", "tabby", "dog"), ("cat", "dog"), members)
>>> m.members
((0, 1), (2,))
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dreamshift.errors import DreamshiftError

# ImageNet-1k output indices per world class, following ImageNet-9's super-classes where they
# exist (dog 151-268, bird 7-24/80-100/127-146, ...). ImageNet-1k has no giraffe.
IMAGENET_WORLD: dict[str, list[int]] = {
    "bear": [294, 295, 296, 297],
    "bird": [*range(7, 25), *range(80, 101), *range(127, 147)],
    "cat": [281, 282, 283, 284, 285],
    "cow": [345, 346, 347],
    "dog": list(range(151, 269)),
    "elephant": [101, 385, 386],
    "horse": [339],
    "sheep": [348, 349],
    "zebra": [340],
}


def read_label_map(path: str | Path) -> dict[str, list[Any]]:
    """A ``{dataset class: [model label names or indices]}`` YAML or JSON file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DreamshiftError(f"cannot read label map {path} ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DreamshiftError(
            f"label map {path} must map each dataset class to a list of model labels, "
            'e.g. {"dog": ["beagle", 162]}'
        )
    return {str(k): v for k, v in data.items()}


SHIPPED_MAPS: dict[str, dict[str, list[int]]] = {"imagenet-1k": IMAGENET_WORLD}


def _closest(name: str, labels: Sequence[str], n: int = 5) -> list[str]:
    """Label names like ``name``: close spellings first, then names containing it."""
    lower = {label.lower(): label for label in labels}
    close = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)
    within = [k for k in lower if name.lower() in k and k not in close]
    return [lower[k] for k in [*close, *within][:n]]


@dataclass(frozen=True)
class LabelMap:
    """``members[i]``: the model outputs gathered into dataset class ``classes[i]``."""

    classes: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    identity: bool

    @classmethod
    def build(
        cls,
        model_classes: Sequence[str],
        dataset_classes: Sequence[str],
        mapping: Mapping[str, Sequence[Any]] | None = None,
        model_name: str = "the model",
        label_space: str = "",
    ) -> LabelMap:
        """Each dataset class gets the outputs its entry in ``mapping`` names (label names,
        case-insensitive, or output indices), else those of the map shipped for
        ``label_space``, else the output of the same name."""
        entries: dict[str, Sequence[Any]] = dict(SHIPPED_MAPS.get(label_space, {}))
        entries.update(mapping or {})  # a user's map extends the shipped one, class by class
        index = {c.lower(): i for i, c in enumerate(model_classes)}
        members: list[tuple[int, ...]] = []
        unmapped = []
        for c in dataset_classes:
            found = []
            for label in entries.get(c, []):
                if isinstance(label, int) and not isinstance(label, bool):
                    if not 0 <= label < len(model_classes):
                        raise DreamshiftError(
                            f"label map entry {c}: output {label} is out of range: {model_name} "
                            f"has {len(model_classes)} outputs"
                        )
                    found.append(label)
                elif isinstance(label, str) and label.lower() in index:
                    found.append(index[label.lower()])
                else:
                    near = _closest(str(label), model_classes)
                    raise DreamshiftError(
                        f"label map entry {c}: {label!r} is not an output of {model_name} "
                        + (f"(closest label names: {', '.join(near)})" if near else
                           f"(its {len(model_classes)} outputs are "
                           f"{', '.join(model_classes[:5])}, ...)")
                    )  # fmt: skip
            if c not in entries and c.lower() in index:
                found = [index[c.lower()]]
            if not found:
                unmapped.append(c)
            members.append(tuple(sorted(set(found))))
        if unmapped:
            hints = []
            for c in unmapped:
                near = _closest(c, model_classes)
                hint = f"closest label names: {', '.join(near)}" if near else None
                hints.append(f"{c} ({hint or 'no label name close to it: map it by index'})")
            raise DreamshiftError(
                f"{model_name} has no output for the dataset's class(es) {'; '.join(hints)}: pass "
                "--label-map FILE (YAML {class: [model label names or output indices]}; it "
                "extends the shipped map), or audit a dataset without those classes "
                "(compose --classes ...)"
            )
        identity = len(model_classes) == len(dataset_classes) and all(
            m == (i,) for i, m in enumerate(members)
        )
        return cls(tuple(dataset_classes), tuple(members), identity)

    def owners(self, n_outputs: int) -> np.ndarray:
        """(n_outputs,): the dataset class index each model output belongs to, -1 for none."""
        out = np.full(n_outputs, -1, np.int64)
        for k, members in reversed(list(enumerate(self.members))):  # the first class wins
            out[list(members)] = k
        return out

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """(N, K_model) logits -> (N, K_dataset) scores: the best member logit per class."""
        if self.identity:
            return logits
        return np.stack([logits[:, list(m)].max(1) for m in self.members], axis=1)

    def describe(self) -> dict[str, Any]:
        if self.identity:
            return {"kind": "identity"}
        members = {c: list(m) for c, m in zip(self.classes, self.members, strict=True)}
        return {"kind": "max over members", "members": members}
