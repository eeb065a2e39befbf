"""The torch side of a dataset directory: the one place images are read for training and
evaluation, and the samplers that decide what is read when.

- :class:`StreamedImages`: images of an :class:`~dreamshift.data.loading.ImageTable`,
  decoded, preprocessed and (for training) augmented inside DataLoader workers. A training
  item is keyed by ``(epoch, draw, index)``: its augmentation is drawn from a generator seeded
  by (seed, epoch, draw), so the weights of a run depend neither on the number of loader
  workers nor on how the global batch is split between processes.
- :class:`EpochBatches`: the batch sampler of a training epoch: one global order per epoch
  (a permutation, or weighted draws with replacement for mixes), cut into global batches of
  ``batch_size x processes``; each process takes its own slice, and a resumed epoch starts at
  its step.
- :func:`loader`: the DataLoader over both (workers, pinned memory on CUDA, prefetch); a
  missing, changed or undecodable image comes back as :class:`BadImage` and stops the run
  with one line naming the file.
- :class:`ShiftDataset`: one split as a WILDS-style dataset for users' own training loops.

``ShiftDataset``: a torch Dataset over one split of a dataset directory, WILDS style.

Each item is ``(x, y, metadata)`` as in WILDS (Koh et al. 2021): ``x`` the image (by default a
float tensor (3, H, W) in [0, 1]; ``transform`` receives the PIL image instead), ``y`` the
class index (-1 for a background alone), and ``metadata`` a LongTensor of
:data:`METADATA_FIELDS`: the background index, whether it is the class's usual background, the
group (class x background) and ``y``. ``group_array``, ``y_array`` and ``n_groups`` serve
group-balanced samplers and worst-group accuracy. ``masks=True`` adds the object's mask:
items are ``(x, y, metadata, mask)``, ``mask`` a bool tensor (H, W) of the image's size, True
on the object (the dataset's ``mask_path`` file, checked against its sha256; all False for an
image without an object, a background alone). ``transform`` changes the image only: the mask
comes untransformed, so apply a transform that moves pixels (crop, flip, resize) to it
yourself.

>>> import tempfile
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> from dreamshift.compose.runner import compose
>>> root = Path(tempfile.mkdtemp()) / "paste"
>>> cfg = ComposeConfig(classes=("cat", "dog"), background_names=("grass", "snow"),
...     recipe=ShiftRecipe(rho=1.0, train_size=4, val_per_group=0, test_per_group=1,
...                        anti_per_group=0))
>>> _ = compose(cfg, root, progress=False)
>>> data = ShiftDataset(root, split="test")
>>> x, y, metadata = data[0]
>>> tuple(x.shape), data.classes[int(y)] == data.rows[0]["fg_class"], data.n_groups
((3, 64, 64), True, 4)
>>> loader = torch.utils.data.DataLoader(data, batch_size=2)
>>> [tuple(t.shape) for t in next(iter(loader))]
[(2, 3, 64, 64), (2,), (2, 4)]
>>> x, y, metadata, mask = ShiftDataset(root, split="test", masks=True)[0]
>>> mask.dtype, tuple(mask.shape), bool(mask.any())
(torch.bool, (64, 64), True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.data.loading import ImageTable, usable_rows
from dreamshift.data.masks import MASK_CARRYING_MODES
from dreamshift.data.recombine import Recombination
from dreamshift.data.transforms import Preprocessing, augment_image
from dreamshift.data.verification import only_verified
from dreamshift.errors import BadInputError, DreamshiftError
from dreamshift.seeding import derive_seed

Key = tuple[int, int, int]  # (epoch, draw within the epoch, image index): a training draw


class Images(NamedTuple):
    """A batch: model inputs (B, 3, S, S), class (B,), background (B,), the images' places
    in their table (B,)."""

    x: torch.Tensor
    y: torch.Tensor
    bg: torch.Tensor
    position: torch.Tensor


@dataclass(frozen=True)
class BadImage:
    """An image that could not be used, in place of a batch: the file and what to do."""

    message: str


class StreamedImages(torch.utils.data.Dataset):
    """The images of ``table`` as model inputs, preprocessed by ``prep``. With ``seed``,
    items are keyed by ``(epoch, draw, index)`` and augmented (flip + padded crop,
    :func:`~dreamshift.data.transforms.augment_image`) from a generator seeded by
    (seed, epoch, draw); without, keyed by the index and not augmented. ``recombine`` (with
    ``seed``): each image first goes through it (ForAug's recombination, its object on a new
    background), drawn from a generator seeded by (seed, "recombine", epoch, draw); the item's
    background is then the new one."""

    def __init__(
        self,
        table: ImageTable,
        prep: Preprocessing,
        seed: int | None = None,
        recombine: Recombination | None = None,
    ):
        self.table, self.prep, self.seed, self.recombine = table, prep, seed, recombine

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: int | Key) -> tuple[torch.Tensor, int, int, int] | BadImage:
        epoch, draw, i = key if isinstance(key, tuple) else (-1, -1, key)
        bg = int(self.table.bg[i])
        try:
            pixels = self.table.read(i)
            if self.recombine is not None and self.seed is not None:
                rng = np.random.default_rng(derive_seed(self.seed, "recombine", epoch, draw))
                mask = self.table.read_mask(i, (pixels.shape[1], pixels.shape[0]))
                pixels, bg = self.recombine(pixels, mask, bg, rng)
        except BadInputError as exc:
            return BadImage(str(exc))
        x = self.prep(pixels[None])[0]  # (3, S, S)
        if self.seed is not None:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "augment", epoch, draw))
            x = augment_image(x, g)
        return x, int(self.table.y[i]), bg, i


def collate(items: list[Any]) -> Images | BadImage:
    """Stack items into :class:`Images`; the first :class:`BadImage` among them instead. The
    images come channels-last in memory (strides of (B, H, W, 3)), which oneDNN's and cuDNN's
    convolutions run faster on: 1.4x for world-cnn on this project's 2-core CPU."""
    for item in items:
        if isinstance(item, BadImage):
            return item
    xs, ys, bgs, idx = zip(*items, strict=True)
    hwc = [x.permute(1, 2, 0) for x in xs]  # (S, S, 3) views
    out = None
    if torch.utils.data.get_worker_info() is not None:  # stacked straight into shared memory
        numel = len(hwc) * hwc[0].numel()
        storage = hwc[0].untyped_storage()._new_shared(numel * hwc[0].element_size())
        out = hwc[0].new(storage).resize_((len(hwc), *hwc[0].shape))
    x = torch.stack(hwc, out=out).permute(0, 3, 1, 2)  # (B, 3, S, S), channels-last
    return Images(x, torch.tensor(ys), torch.tensor(bgs), torch.tensor(idx))


class EpochBatches(torch.utils.data.Sampler[list[Key]]):
    """This process's share of each global batch of an epoch, as lists of keys.

    The order of epoch ``e`` comes from a generator seeded by (seed, "epoch", e): a permutation
    of the ``n`` images, or with ``weights`` ``n`` draws with replacement in proportion to
    them. Step ``s`` takes the global batch ``order[s*G:(s+1)*G]`` (G = ``batch_size`` x
    ``processes``) and process ``rank`` its ``[rank*B:(rank+1)*B]``; the last partial batch is
    dropped. So 2 processes x batch 16 see, together, the images and augmentations of
    1 process x batch 32.

    >>> batches = EpochBatches(10, batch_size=2, seed=0, rank=1, processes=2)
    >>> len(batches), [len(b) for b in batches], batches[0][0][:2]
    (2, [2, 2], (0, 2))
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        weights: torch.Tensor | None = None,
        rank: int = 0,
        processes: int = 1,
    ):
        self.n, self.batch_size, self.seed, self.weights = n, batch_size, seed, weights
        self.rank, self.processes = rank, processes
        self.steps = n // (batch_size * processes)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """The epoch to draw, from its step ``start_step`` on (a resumed epoch)."""
        self.epoch, self.start = epoch, start_step

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=g)

    def __getitem__(self, step: int) -> list[Key]:
        return self._batch(self.order(self.epoch), self.start + step)

    def _batch(self, order: torch.Tensor, step: int) -> list[Key]:
        first = step * self.batch_size * self.processes + self.rank * self.batch_size
        mine = order[first : first + self.batch_size].tolist()
        return [(self.epoch, first + j, i) for j, i in enumerate(mine)]

    def __iter__(self) -> Iterator[list[Key]]:
        order = self.order(self.epoch)
        for step in range(self.start, self.steps):
            yield self._batch(order, step)

    def __len__(self) -> int:
        return self.steps - self.start


def loader(
    images: StreamedImages,
    batches: torch.utils.data.Sampler[Any] | None = None,
    batch_size: int = 256,
    workers: int = 0,
    device: torch.device | str = "cpu",
) -> torch.utils.data.DataLoader:
    """A DataLoader of :class:`Images` batches (or :class:`BadImage`) over ``images``, drawn
    by the batch sampler ``batches`` (none: every image once, in order, ``batch_size`` at a
    time). ``workers`` processes decode ahead (2 batches each); on CUDA the batches come in
    pinned memory, for non-blocking copies. The loader leaves the global RNG alone, which the
    training updates draw from."""
    if batches is None:
        batches = torch.utils.data.BatchSampler(
            torch.utils.data.SequentialSampler(range(len(images))), batch_size, drop_last=False
        )
    return torch.utils.data.DataLoader(
        images,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        generator=torch.Generator(),  # its workers' base seed: not drawn from the global RNG
    )


METADATA_FIELDS = ("background", "aligned", "group", "y")


class ShiftDataset(torch.utils.data.Dataset):
    """The usable rows of ``split`` of dataset directory ``root`` (``verified_only``: those
    that passed review); ``masks``: each item ends with the object's mask (see the module's
    docstring), and a split whose objects have no mask is refused, naming how to make one."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[Image.Image], Any] | None = None,
        verified_only: bool = False,
        masks: bool = False,
    ):
        self.root = Path(root)
        meta = ds.DatasetMeta.read(self.root)
        self.classes: list[str] = list(meta.classes)
        self.backgrounds: list[str] = list(meta.backgrounds)
        rows = usable_rows(ds.read_manifest(self.root).to_pylist(), split)
        if verified_only:
            rows = only_verified(self.root, rows)
        if not rows:
            splits = sorted(set(ds.read_manifest(self.root).column("split").to_pylist()))
            raise DreamshiftError(f"{self.root} has no usable rows in split {split!r} ({splits})")
        if masks:
            _check_masks(self.root, meta, rows, split)
        self.rows = rows
        self.table = ImageTable.of_rows(self.root, rows, self.classes, self.backgrounds)
        self.split = split
        self.transform = transform
        self.masks = masks
        self.metadata_fields = METADATA_FIELDS
        y = [self.classes.index(r["fg_class"]) if r["fg_class"] in self.classes else -1
             for r in rows]  # fmt: skip
        bg = [self.backgrounds.index(r["bg_class"]) for r in rows]
        self.y_array = torch.tensor(y, dtype=torch.long)
        self.n_groups = len(self.classes) * len(self.backgrounds)
        group = [
            c * len(self.backgrounds) + b if c >= 0 else -1 for c, b in zip(y, bg, strict=True)
        ]
        self.group_array = torch.tensor(group, dtype=torch.long)
        aligned = [int(bool(r["aligned"])) for r in rows]
        self.metadata_array = torch.tensor(
            np.stack([bg, aligned, group, y], axis=1), dtype=torch.long
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        """``(x, y, metadata)``, and ``mask`` last with ``masks=True``."""
        pixels = self.table.read(i)  # (H, W, 3) uint8, checked against the manifest
        if self.transform is not None:
            x = self.transform(Image.fromarray(pixels))
        else:
            x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
        if not self.masks:
            return x, self.y_array[i], self.metadata_array[i]
        height, width = pixels.shape[:2]
        return x, self.y_array[i], self.metadata_array[i], self.mask(i, (width, height))

    def mask(self, i: int, size: tuple[int, int]) -> torch.Tensor:
        """Item ``i``'s object mask as a bool tensor of ``size`` (width, height): its
        ``mask_path`` file, checked against its sha256; all False where there is no object."""
        return torch.from_numpy(self.table.read_mask(i, size).copy())

    def group_name(self, group: int) -> str:
        """``class/background`` of a group id."""
        c, b = divmod(group, len(self.backgrounds))
        return f"{self.classes[c]}/{self.backgrounds[b]}"


def _check_masks(root: Path, meta: ds.DatasetMeta, rows: list[dict[str, Any]], split: str) -> None:
    """Refuse masks for ``rows`` (of ``split`` of ``root``) when an image of an object has none,
    naming the command that makes the dataset again with masks (an image without an object,
    a background alone, has none to have)."""
    lacking = [r["sample_id"] for r in rows if r["fg_class"] and not r.get("mask_path")]
    if not lacking:
        return
    where = (
        f"{root}: {len(lacking)} of the {len(rows)} images of split {split!r} have no object "
        f"mask (e.g. {lacking[0]}), and masks=True asks for them"
    )
    mode = meta.config.get("mode")
    if meta.stage == "dream" and mode not in MASK_CARRYING_MODES:
        raise DreamshiftError(
            f"{where}. It was dreamed with --mode {mode}, which draws the object anew, so its "
            f"images have no object mask (modes {', '.join(MASK_CARRYING_MODES)} keep their "
            "guide's): leave masks off"
        )
    if meta.stage == "dream":
        source = meta.source or "SOURCE"
        raise DreamshiftError(
            f"{where}: its guides in {source} were composed before dreamshift wrote masks. "
            f"Compose them again, with the same settings, into a new folder, and dream from "
            f"that: dreamshift compose --config {source}/dataset.json --out NEW, then "
            f"dreamshift dream NEW --config {root}/dataset.json --out NEW_DREAM"
        )
    raise DreamshiftError(
        f"{where}: it was made before dreamshift wrote masks. Compose it again, with the same "
        f"settings, into a new folder, which writes them: dreamshift compose --config "
        f"{root}/dataset.json --out NEW"
    )
