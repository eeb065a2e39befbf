"""Where foregrounds and backgrounds come from: the embedded world or the user's folders.

Foreground folder: ``DIR/<class>/<name>.png`` RGBA cut-outs, or any image with a mask beside
it named ``<name>.mask.png`` (white = object); with ``paste="rect"`` any image, pasted whole as
a centre-cropped square (D3S's code). Background folder: ``DIR/<label>/<image>``, or a dataset
directory (``dreamshift backgrounds``), its images by ``bg_class``.
Source ids are recorded in the manifest: ``animal-mnist:<index>``, ``world:<bg>:<seed>``, or a
path relative to the folder.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from dreamshift.data.imagenet import synset_table
from dreamshift.data.images import flip_rotate, load_image
from dreamshift.data.masks import MASK_SUFFIX
from dreamshift.data.recombine import BackgroundSource
from dreamshift.errors import BadInputError, DreamshiftError
from dreamshift.world import animals, appearance, backgrounds


class ForegroundSource(Protocol):
    classes: tuple[str, ...]

    def candidates(self, split: str, class_name: str) -> list[str]: ...

    def cutout(
        self,
        source_id: str,
        rng: np.random.Generator,
        box_side: int,
        flip: bool,
        rotation: float,
        coat_class: str | None = None,
    ) -> tuple[Image.Image, str, dict[str, Any]]:
        """(RGBA cut-out with longer side ~box_side, mask id, appearance parameters).
        ``coat_class``: paint the world's silhouette in that class's typical coat (None: a
        random coat); other sources keep their own pixels."""
        ...


class WorldForegrounds:
    """animal-mnist silhouettes painted with a coat (world/appearance.py)."""

    classes = animals.CLASSES

    def candidates(self, split: str, class_name: str) -> list[str]:
        idx = animals.load_silhouettes().indices(split, class_name)
        return [f"animal-mnist:{i}" for i in idx]

    def cutout(
        self,
        source_id: str,
        rng: np.random.Generator,
        box_side: int,
        flip: bool,
        rotation: float,
        coat_class: str | None = None,
    ) -> tuple[Image.Image, str, dict[str, Any]]:
        mask = animals.load_silhouettes().masks[int(source_id.split(":")[1])]
        coat = coat_class or appearance.RANDOM
        img, params = appearance.paint_silhouette(mask, rng, box_side, flip, rotation, coat)
        return img, source_id, params


class WorldBackgrounds:
    """Procedural scenes (world/backgrounds.py), a fresh one per sample."""

    names = backgrounds.BACKGROUNDS

    def choose(self, name: str, rng: np.random.Generator) -> str:
        return f"world:{name}:{int(rng.integers(2**62))}"

    def image(self, source_id: str, size: int) -> Image.Image:
        _, name, seed = source_id.split(":")
        return Image.fromarray(backgrounds.render_background(name, int(seed), size))


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` not hidden, sorted; a symbolic link loop among them is an
    error naming it (it would look like a missing file)."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for p in entries:
        try:
            p.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DreamshiftError(
                    f"{p} is a symbolic link loop (it leads back to itself): remove it or "
                    "point it at an image or a folder"
                ) from exc
    return entries


def _sampled_files(root: Path, folder: Path, n: int) -> list[Path]:
    """``n`` files of ``folder``, the same ones whatever the listing order (the smallest path
    hashes), read entry by entry: an ImageNet class folder of 1 300 images is never listed
    whole in memory."""

    def files() -> Iterator[Path]:
        with os.scandir(folder) as it:
            for e in it:
                if not e.name.startswith(".") and not e.name.endswith(MASK_SUFFIX) and e.is_file():
                    yield Path(e.path)

    chosen = heapq.nsmallest(n, files(), key=lambda p: _split_of(p.relative_to(root).as_posix()))
    return sorted(chosen)


def _label_folders(root: Path, what: str, per_class: int = 0) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise DreamshiftError(f"{what} folder {root} does not exist or is not a folder")
    out: dict[str, list[Path]] = {}
    for sub in (p for p in _entries(root) if p.is_dir()):
        if per_class:
            files = _sampled_files(root, sub, per_class)
        else:
            files = [p for p in _entries(sub) if p.is_file() and not p.name.endswith(MASK_SUFFIX)]
        if not files:
            raise DreamshiftError(
                f"{what} folder {sub} is empty: add images to it or remove the folder"
            )
        out[sub.name] = files
    if not out:
        raise DreamshiftError(
            f"{what} folder {root} has no sub-folders: make one sub-folder per label"
        )
    return out


def _split_of(rel: str) -> float:
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little") / 2**64


class FolderForegrounds:
    """User cut-outs, split into train/val/test by a hash of their path (shapes held out)."""

    def __init__(
        self,
        root: Path,
        share_across_splits: bool = False,
        paste: str = "mask",
        class_names: str = "",
        per_class: int = 0,
    ):
        self.root = root
        self.paste = paste
        self.files = _label_folders(root, "foreground", per_class)
        names = {folder: folder for folder in self.files}
        if class_names:  # an ImageNet-style tree: folders are wnids
            table = synset_table(class_names)
            unknown = [f for f in self.files if f not in table]
            if unknown:
                raise DreamshiftError(
                    f"foreground folders {unknown[:5]} of {root} are no wnids of {class_names}: "
                    "name the folders by wnid (n01440764, ...) or drop --class-names"
                )
            names = {folder: table[folder].name for folder in self.files}
        self.classes = tuple(names[f] for f in self.files)
        self.share = share_across_splits
        self._splits: dict[str, dict[str, list[str]]] = {}
        for folder, files in self.files.items():
            cls = names[folder]
            rels = sorted((f.relative_to(root).as_posix() for f in files), key=_split_of)
            if share_across_splits:
                self._splits[cls] = dict.fromkeys(animals.SPLITS, rels)
                continue
            if len(rels) < 3:
                raise DreamshiftError(
                    f"foreground folder {root / folder} has {len(rels)} file(s); held-out splits "
                    "need at least 3 (train/val/test): add images or pass --share-foregrounds"
                )
            n_val = max(1, round(0.1 * len(rels)))
            n_train = len(rels) - 2 * n_val
            self._splits[cls] = {
                "train": sorted(rels[:n_train]),
                "val": sorted(rels[n_train : n_train + n_val]),
                "test": sorted(rels[n_train + n_val :]),
            }

    def candidates(self, split: str, class_name: str) -> list[str]:
        return self._splits[class_name][split]

    def cutout(
        self,
        source_id: str,
        rng: np.random.Generator,
        box_side: int,
        flip: bool,
        rotation: float,
        coat_class: str | None = None,
    ) -> tuple[Image.Image, str, dict[str, Any]]:
        path = self.root / source_id
        img = load_image(path)
        mask_id = source_id
        if self.paste == "rect":  # D3S: the whole image, centre-cropped to a square, no mask
            img = img.convert("RGB")
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize(
                (box_side, box_side), Image.Resampling.BILINEAR
            )
            img.putalpha(255)
            img, flipped, degrees = flip_rotate(img, rng, flip, rotation)
            return img, "rect", {"flip": flipped, "rotation": degrees, "paste": "rect"}
        if img.mode in ("RGBA", "LA") or "transparency" in img.info:
            img = img.convert("RGBA")
        else:
            mask_path = path.with_name(path.stem + MASK_SUFFIX)
            if not mask_path.exists():
                raise BadInputError(
                    f"foreground {path} has no alpha channel and no mask file {mask_path.name} "
                    "beside it: save it as an RGBA PNG or add the mask"
                )
            mask = load_image(mask_path, "L")
            if mask.size != img.size:
                raise BadInputError(
                    f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but its image {path} is "
                    f"{img.size[0]}x{img.size[1]}: masks must match their image's size"
                )
            img = img.convert("RGB")
            img.putalpha(mask)
            mask_id = mask_path.relative_to(self.root).as_posix()
        bbox = img.getchannel("A").getbbox()
        if bbox is None:
            raise BadInputError(f"foreground {path} has an empty mask (fully transparent)")
        img = img.crop(bbox)
        k = box_side / max(img.size)
        img = img.resize(
            (max(1, round(img.width * k)), max(1, round(img.height * k))),
            Image.Resampling.BILINEAR,
        )
        img, flipped, degrees = flip_rotate(img, rng, flip, rotation)
        return img, mask_id, {"flip": flipped, "rotation": degrees}


class FolderBackgrounds:
    """User background images, centre-cropped to a square and resized."""

    def __init__(self, root: Path):
        self.root = root
        if (root / "dataset.json").is_file():  # a dataset directory (dreamshift backgrounds)
            self.files = _dataset_backgrounds(root)
        else:
            self.files = {
                label: [f.relative_to(root).as_posix() for f in files]
                for label, files in _label_folders(root, "background").items()
            }
        self.names = tuple(self.files)

    def choose(self, name: str, rng: np.random.Generator) -> str:
        files = self.files[name]
        return files[int(rng.integers(len(files)))]

    def image(self, source_id: str, size: int) -> Image.Image:
        img = load_image(self.root / source_id, "RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        return img.resize((size, size), Image.Resampling.BILINEAR) if side != size else img


def foreground_source(
    spec: str,
    share_across_splits: bool = False,
    paste: str = "mask",
    class_names: str = "",
    per_class: int = 0,
) -> ForegroundSource:
    if spec == "world":
        return WorldForegrounds()
    return FolderForegrounds(Path(spec), share_across_splits, paste, class_names, per_class)


def _dataset_backgrounds(root: Path) -> dict[str, list[str]]:
    """label -> image paths of a dataset directory's usable images of backgrounds alone (no
    object: ``dreamshift backgrounds``, ``dream --mode remove``, a split ``spurious``), by
    ``bg_class``."""
    from dreamshift.data import dataset as ds

    out: dict[str, list[str]] = {}
    for r in ds.read_rows(root):
        if r.status == ds.OK and r.bg_class and r.path and not r.fg_class:
            out.setdefault(r.bg_class, []).append(r.path)
    if not out:
        raise DreamshiftError(
            f"background dataset {root} has no usable images of backgrounds alone (rows "
            "without fg_class): make them with `dreamshift backgrounds` or `dreamshift dream "
            "--mode remove`"
        )
    return {label: sorted(paths) for label, paths in out.items()}


def background_source(spec: str) -> BackgroundSource:
    if spec == "world":
        return WorldBackgrounds()
    return FolderBackgrounds(Path(spec))
