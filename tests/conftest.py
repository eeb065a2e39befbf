from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.models.tiny_sd import save_tiny_sd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_CLASSES = ("bear", "cat", "dog")
SMALL_BACKGROUNDS = ("grass", "water", "snow")


def small_config(**overrides) -> ComposeConfig:
    """A 3 x 3 world dataset of a few dozen images: fast, yet every split and group exists."""
    recipe = ShiftRecipe(
        rho=0.8, train_size=30, val_per_group=1, test_per_group=2, anti_per_group=1
    )
    base = ComposeConfig(
        classes=SMALL_CLASSES,
        background_names=SMALL_BACKGROUNDS,
        recipe=recipe,
        shard_size=8,
        placement=Placement(scale=(0.3, 0.5)),
    )
    fields = {**base.__dict__, **overrides}
    return ComposeConfig(**fields)


def tree_digest(root: Path, exclude_suffixes: tuple[str, ...] = (".done",)) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(exclude_suffixes)
    }


@pytest.fixture(scope="session")
def world_folders(tmp_path_factory) -> Path:
    """The world exported as ordinary folders (foregrounds/<class>, backgrounds/<label>)."""
    from dreamshift.world.export import export_world

    out = tmp_path_factory.mktemp("world_files")
    return export_world(out, per_class=4, per_background=2, fg_size=40, bg_size=64)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def guides(tmp_path_factory) -> Path:
    """12 composed guides: 2 classes x 2 backgrounds, train and test splits."""
    cfg = ComposeConfig(
        classes=("cat", "dog"),
        background_names=("grass", "snow"),
        recipe=ShiftRecipe(rho=1.0, train_size=8, val_per_group=0, test_per_group=1,
                           anti_per_group=0),
        placement=Placement(scale=(0.5, 0.5)),
    )  # fmt: skip
    out = tmp_path_factory.mktemp("guides") / "paste"
    compose(cfg, out, progress=False)
    return out
