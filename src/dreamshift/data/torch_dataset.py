"""``ShiftDataset``: a torch Dataset over one split of a dataset directory, WILDS style.

Each item is ``(x, y, metadata)`` as in WILDS (Koh et al. 2021): ``x`` the image (by default a
float tensor (3, H, W) in [0, 1]; ``transform`` receives the PIL image instead), ``y`` the
class index (-1 for a background alone), and ``metadata`` a LongTensor of
:data:`METADATA_FIELDS`: the background index, whether it is the class's usual background, the
group (class x background) and ``y``. ``group_array``, ``y_array`` and ``n_groups`` serve
group-balanced samplers and worst-group accuracy.

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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.data.loading import usable_rows
from dreamshift.data.verification import only_verified
from dreamshift.errors import DreamshiftError

METADATA_FIELDS = ("background", "aligned", "group", "y")


class ShiftDataset(torch.utils.data.Dataset):
    """The usable rows of ``split`` of dataset directory ``root`` (``verified_only``: those
    that passed review)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[Image.Image], Any] | None = None,
        verified_only: bool = False,
    ):
        self.root = Path(root)
        meta = ds.read_dataset_json(self.root)
        self.classes: list[str] = list(meta["classes"])
        self.backgrounds: list[str] = list(meta["backgrounds"])
        rows = usable_rows(ds.read_manifest(self.root).to_pylist(), split)
        if verified_only:
            rows = only_verified(self.root, rows)
        if not rows:
            splits = sorted(set(ds.read_manifest(self.root).column("split").to_pylist()))
            raise DreamshiftError(f"{self.root} has no usable rows in split {split!r} ({splits})")
        self.rows = rows
        self.split = split
        self.transform = transform
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

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        with Image.open(self.root / self.rows[i]["path"]) as img:
            image = img.convert("RGB")
        if self.transform is not None:
            x = self.transform(image)
        else:
            x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
        return x, self.y_array[i], self.metadata_array[i]

    def group_name(self, group: int) -> str:
        """``class/background`` of a group id."""
        c, b = divmod(group, len(self.backgrounds))
        return f"{self.classes[c]}/{self.backgrounds[b]}"
