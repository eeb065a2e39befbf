"""``load_classifier(spec)``: the one place a model spec becomes a :class:`Classifier`.

- ``world-cnn``, ``world-resnet18``: the world's ERM classifiers shipped in the package;
- a folder: the kind its marker names (:mod:`dreamshift.folders`), loaded by the reader
  registered under that name in :data:`FOLDER_KINDS`; an older folder without a marker by
  the first registered kind that recognises it, else as a classifier folder (the shipped ones,
  or one written by the earlier ``dreamshift train-classifier``). A stage that writes
  classifier folders registers its reader when it is imported, and names itself in the
  ``dreamshift.classifier_folders`` entry-point group (``pyproject.toml``) so that it is
  imported when a folder is looked up: learn run folders load without this layer knowing of
  learn;
- ``timm:NAME[.TAG][@FILE]``, ``torchvision:NAME[:WEIGHTS][@FILE]``,
  ``open_clip:ARCH/PRETRAINED`` (:mod:`dreamshift.models.zoo`, which says where weights are
  looked up).

>>> load_classifier("world-resnet18").classes[:3]
('bear', 'bird', 'cat')
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from dreamshift.assets import shipped
from dreamshift.errors import DreamshiftError
from dreamshift.folders import describe, folder_kind
from dreamshift.models.architectures import ARCHITECTURES
from dreamshift.models.classifier import Classifier, load_checkpoint
from dreamshift.models.zoo import SOURCES
from dreamshift.registry import Registry


@dataclass(frozen=True)
class FolderKind:
    """A kind of classifier folder: how to load it, and how to recognise one written before
    folders named their kind (:mod:`dreamshift.folders`)."""

    recognise: Callable[[Path], bool]
    load: Callable[[Path, str], Classifier]


FOLDER_KINDS: Registry[FolderKind] = Registry("classifier folder kind")
ENTRY_POINTS = "dreamshift.classifier_folders"  # modules that register folder kinds on import


@functools.cache
def _import_folder_kinds() -> None:
    for entry in metadata.entry_points(group=ENTRY_POINTS):
        entry.load()


def _load_folder(folder: Path, device: str) -> Classifier:
    """The classifier of an output folder: by the kind its marker names; a folder without a
    marker (written before there were markers) by the first kind that recognises it, else as
    a plain classifier checkpoint."""
    _import_folder_kinds()
    marked = folder_kind(folder)
    if marked is not None:
        if marked not in FOLDER_KINDS:
            raise DreamshiftError(
                f"--model {folder} is {describe(marked)}, not a classifier: give a learn run "
                "or a classifier folder"
            )
        return FOLDER_KINDS.get(marked).load(folder, device)
    for name in FOLDER_KINDS.names():
        kind = FOLDER_KINDS.get(name)
        if kind.recognise(folder):
            return kind.load(folder, device)
    return load_checkpoint(folder, device)


def shipped_classifiers() -> list[str]:
    """The world architectures whose trained weights ship in the package."""
    return [n for n in ARCHITECTURES.names("world-*") if (shipped("classifiers") / n).is_dir()]


def classifier_fingerprint(spec: str) -> str:
    """What identifies the weights a spec names, for run hashes: for a classifier folder or a
    shipped classifier, the sha256 of the weights file it loads with its classes and
    preprocessing (other files of the folder, such as a learn run's probes, do not count); for
    a zoo name, the spec itself (its library versions the weights)."""
    import hashlib

    if not Path(spec).is_dir() and spec not in shipped_classifiers():
        return spec
    clf = load_classifier(spec)
    text = f"{clf.weights_sha256} {clf.classes} {clf.preprocessing}"
    return hashlib.sha256(text.encode()).hexdigest()


def absolute_spec(spec: str) -> str:
    """``spec`` with the paths in it made absolute (a folder, the FILE of ``SOURCE:NAME@FILE``),
    for records that load it again later from another working directory (a fine-tune's base)."""
    if not spec or Path(spec).exists():
        return str(Path(spec).resolve()) if spec else spec
    head, sep, file = spec.partition("@")
    if sep and ":" in head and file:
        return f"{head}@{Path(file).expanduser().resolve()}"
    return spec


def parameters_sha256(net: torch.nn.Module) -> str:
    """sha256 of a network's state (names, dtypes, shapes and values, in name order): what
    identifies weights that came from no file of ours."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_classifier(
    spec: str,
    dataset_classes: Sequence[str] = (),
    device: str = "cpu",
    allow_random_weights: bool = False,
) -> Classifier:
    """The classifier a spec names (see the module docstring). ``dataset_classes`` are used by
    zero-shot models to write their prompts; ``allow_random_weights`` lets a spec that names
    no weights (``open_clip:ARCH``) build a seeded random initialisation instead of failing."""
    folder = Path(spec)
    if folder.is_file():
        raise DreamshiftError(
            f"--model {spec} is a weights file, which does not say its architecture: name it, "
            f"e.g. --model torchvision:resnet50 --weights {spec} (or torchvision:resnet50@{spec})"
        )
    if folder.is_dir():
        return _load_folder(folder, device)
    if spec in shipped_classifiers():
        folder = shipped("classifiers") / spec
        if not folder.is_dir():
            raise DreamshiftError(
                f"the shipped {spec} checkpoint is missing from {folder}: reinstall dreamshift "
                f"or train one with `dreamshift learn DATASET --arch {spec} --out DIR`"
            )
        return load_checkpoint(folder, device)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        clf = SOURCES.get(prefix)(rest, dataset_classes, device, allow_random_weights)
        if not clf.weights_sha256:  # no file to hash: the parameters themselves
            clf.weights_sha256 = parameters_sha256(clf.net)
        return clf
    raise DreamshiftError(
        f"unknown model {spec!r}: give a classifier folder, one of "
        f"{', '.join(shipped_classifiers())}, or SOURCE:NAME with SOURCE one of "
        f"{', '.join(SOURCES.names())} (e.g. timm:resnet50)"
    )
