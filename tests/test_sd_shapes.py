"""Stable Diffusion at its real shapes, offline: SD 1.5, SD 2.1 (v-prediction) and SDXL (two
text encoders, added conditions) written as diffusers folders with random weights at full size
(dreamshift.models.sd_shapes), run through `dream` (img2img, txt2img and inpaint), `tune --method
lora` (SD 2.1's v-prediction target, SDXL's added conditions) and `dream --adapter`, one step
each at a small resolution. Slow: the models are 2-7 GB in float16 and load in float32 on the
CPU (SDXL: 14 GB)."""

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
from dreamshift.data.masks import erode
from dreamshift.models.sd_shapes import write_random_pipeline

pytestmark = pytest.mark.slow
SIZE = ["--width", "64", "--height", "64"]


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


def _dream_every_pipeline(guides: Path, model: Path, tmp_path: Path) -> None:
    """img2img, txt2img and inpaint (the 4-channel UNet's latent blending, the object's pixels
    restored exactly beyond the feather band)."""
    for mode in ("img2img", "txt2img", "inpaint"):
        out = tmp_path / mode
        assert main(["dream", str(guides), "--out", str(out), "--model", str(model), "--mode",
                     mode, "--steps", "1", "--strength", "1.0", "--splits", "anti",
                     "--no-progress", *SIZE]) == 0  # fmt: skip
        images = _images(out)
        assert len(images) == 2 and all(i.shape == (64, 64, 3) for i in images)
    guide_rows = {r.sample_id: r for r in ds.read_rows(guides)}
    kept = 0
    for row, made in zip(ds.read_rows(tmp_path / "inpaint"), images, strict=True):
        g = guide_rows[str(row.guide_sample_id)]
        exact = erode(np.asarray(Image.open(guides / str(g.mask_path))), 2)  # feather 2
        assert np.array_equal(made[exact], np.asarray(Image.open(guides / str(g.path)))[exact])
        kept += int(exact.sum())
    assert kept > 0


@pytest.mark.parametrize("shape", ["sd15", "sd21", "sdxl"])
def test_published_shapes_dream_tune_and_dream_with_the_adapter(guides, tmp_path, shape, capsys):
    model = write_random_pipeline(shape, tmp_path / shape)
    unet = json.loads((model / "unet" / "config.json").read_text())
    assert unet["block_out_channels"][:3] == [320, 640, 1280]
    assert (shape == "sdxl") == (model / "text_encoder_2").is_dir()
    _dream_every_pipeline(guides, model, tmp_path)
    if shape == "sdxl":
        assert main(["tune", str(guides), "--out", str(tmp_path / "x"), "--model", str(model),
                     "--train-text-encoder", "--no-progress"]) == 1  # fmt: skip
        assert "tune trains SDXL's UNet only" in capsys.readouterr().err

    runs = tmp_path / "runs"
    assert main(["tune", str(guides), "--out", str(runs), "--model", str(model), "--method",
                 "lora", "--steps", "1", "--batch-size", "1", "--rank", "4", "--resolution",
                 "64", "--no-progress"]) == 0  # fmt: skip
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    adapted = tmp_path / "adapted"
    assert main(["dream", str(guides), "--out", str(adapted), "--model", str(model),
                 "--adapter", str(run), "--steps", "1", "--strength", "1.0", "--splits", "anti",
                 "--no-progress",
                 *SIZE]) == 0  # fmt: skip
    applied = json.loads(ds.read_manifest(adapted).to_pylist()[0]["adapters"])
    assert applied[0]["path"] == str(run)
    shutil.rmtree(model)  # 2-7 GB
