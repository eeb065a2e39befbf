"""Stable Diffusion at its real shapes, offline: SD 1.5 and SD 2.1 (v-prediction) written as
diffusers folders with random weights at full size (dreamshift.models.sd_shapes), run through
`dream` (img2img and txt2img), `tune --method lora` and `dream --adapter`, one step each at a
small resolution. Slow: each model is 2-3 GB in float16 and loads in float32 on the CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import small_config
from dreamshift.cli import main
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.models.sd_shapes import SHAPES, write_random_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guides(tmp_path_factory) -> Path:
    recipe = ShiftRecipe(train_size=4, val_per_group=0, test_per_group=0, anti_per_group=1)
    root = tmp_path_factory.mktemp("sd-shapes") / "guides"
    compose(small_config(classes=("cat", "dog"), background_names=("grass", "snow"), recipe=recipe),
            root, progress=False)  # fmt: skip
    return root


def _images(folder: Path) -> list[np.ndarray]:
    rows = [r for r in ds.read_manifest(folder).to_pylist() if r["status"] == ds.OK]
    return [np.asarray(Image.open(folder / r["path"])) for r in rows]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_published_shapes_dream_tune_and_dream_with_the_adapter(guides, tmp_path, shape):
    model = write_random_pipeline(shape, tmp_path / shape)
    unet = json.loads((model / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    size = ["--width", "64", "--height", "64"]
    for mode in ("img2img", "txt2img"):
        out = tmp_path / mode
        assert main(["dream", str(guides), "--out", str(out), "--model", str(model), "--mode",
                     mode, "--steps", "1", "--strength", "1.0", "--splits", "anti",
                     "--no-progress", *size]) == 0  # fmt: skip
        images = _images(out)
        assert len(images) == 2 and all(i.shape == (64, 64, 3) for i in images)

    runs = tmp_path / "runs"
    assert main(["tune", str(guides), "--out", str(runs), "--model", str(model), "--method",
                 "lora", "--steps", "1", "--batch-size", "1", "--rank", "4", "--resolution",
                 "64", "--no-progress"]) == 0  # fmt: skip
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    adapted = tmp_path / "adapted"
    assert main(["dream", str(guides), "--out", str(adapted), "--model", str(model),
                 "--adapter", str(run), "--steps", "1", "--strength", "1.0", "--splits", "anti",
                 "--no-progress",
                 *size]) == 0  # fmt: skip
    applied = json.loads(ds.read_manifest(adapted).to_pylist()[0]["adapters"])
    assert applied[0]["path"] == str(run)
    shutil.rmtree(model)  # 2-3 GB
