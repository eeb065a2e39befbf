"""Object masks in datasets, and the dream modes that keep the object (or remove it) exactly:
inpaint, harmonize, remove (issue 39)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conftest import tree_digest
from dreamshift.cli import main
from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data.images import sha256_bytes
from dreamshift.data.masks import dilate, erode, restore
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream, regenerate
from dreamshift.errors import DreamshiftError


def _pixels(root: Path, rel: str | None) -> np.ndarray:
    return np.asarray(Image.open(root / str(rel)))


def _by_guide(root: Path) -> dict[str, ds.SampleRow]:
    return {str(r.guide_sample_id): r for r in ds.read_rows(root)}


def test_compose_writes_each_objects_mask_beside_its_image(guides):
    rows = ds.read_rows(guides)
    assert rows and all(r.mask_path and r.mask_sha256 for r in rows)
    for r in rows:
        data = (guides / str(r.mask_path)).read_bytes()
        assert sha256_bytes(data) == r.mask_sha256
        mask = _pixels(guides, r.mask_path)
        assert mask.dtype == bool and mask.shape == (r.height, r.width)  # 1-bit, image-sized
        ys, xs = np.nonzero(mask)
        assert mask.sum() > 20
        # the object lies in its recorded box
        assert xs.min() >= r.box_x and xs.max() < r.box_x + r.box_w
        assert ys.min() >= r.box_y and ys.max() < r.box_y + r.box_h


def test_a_background_alone_has_no_mask(tmp_path):
    recipe = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=1, anti_per_group=0,
                         spurious_per_class=1)  # fmt: skip
    cfg = ComposeConfig(classes=("cat",), background_names=("grass", "snow"), recipe=recipe)
    compose(cfg, tmp_path / "d", progress=False)
    rows = ds.read_rows(tmp_path / "d")
    assert {r.split: r.mask_path is None for r in rows} == {ds.TEST: False, ds.SPURIOUS: True}


def test_a_mask_path_outside_the_dataset_is_refused():
    table = pa.table({"sample_id": ["a"], "path": ["shards/00000/a.png"],
                      "mask_path": ["../../etc/a.png"]})  # fmt: skip
    with pytest.raises(DreamshiftError, match=r"has mask_path '\.\./\.\./etc/a\.png'"):
        ds.check_paths(table, Path("m.parquet"))


def test_restore_keeps_the_guide_exactly_beyond_the_feather_band():
    rng = np.random.default_rng(0)
    guide, made = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    keep = np.zeros((32, 32), bool)
    keep[8:24, 6:20] = True
    out = restore(made, guide, keep, 3)
    inner = erode(keep, 3)
    assert np.array_equal(out[inner], guide[inner])  # byte for byte
    assert np.array_equal(out[~keep], made[~keep])  # the dream outside
    band = keep & ~inner  # in between: a blend of both, on every band pixel
    lo, hi = np.minimum(guide, made)[band], np.maximum(guide, made)[band]
    assert np.all((out[band] >= lo) & (out[band] <= hi))
    assert np.array_equal(dilate(keep, 1), ~erode(~keep, 1))


@pytest.mark.parametrize(
    ("mode", "strength", "extra"),
    [("inpaint", 1.0, {}), ("harmonize", 0.5, {"grow": 1}), ("remove", 1.0, {})],
)
def test_masked_modes_keep_the_guides_pixels_outside_the_band(
    tmp_path, tiny_sd, guides, mode, strength, extra
):
    cfg = DreamConfig(source=str(guides), model=str(tiny_sd), mode=mode, steps=3,
                      strength=strength, feather=2, splits=("test",), **extra)  # fmt: skip
    result = dream(cfg, tmp_path / mode, progress=False, batch_size=2)
    assert result.num_failed == 0
    guide_rows = {r.sample_id: r for r in ds.read_rows(guides)}
    grow = cfg.grow_px
    for gid, row in _by_guide(tmp_path / mode).items():
        g = guide_rows[gid]
        mask = _pixels(guides, g.mask_path)
        keep = ~dilate(mask, grow) if mode == "remove" else erode(mask, grow)
        exact = erode(keep, cfg.feather)
        made, guide = _pixels(tmp_path / mode, row.path), _pixels(guides, g.path)
        assert exact.sum() > 0
        assert np.array_equal(made[exact], guide[exact])
        assert np.abs(made[~keep].astype(int) - guide[~keep]).mean() > 1  # redrawn there
        assert (row.pipeline, row.feather, row.grow, row.strength) == (mode, 2, grow, strength)
        if mode == "remove":  # the scene without the object
            assert (row.split, row.fg_class, row.aligned, row.mask_path) == (
                ds.SPURIOUS, None, None, None)  # fmt: skip
            assert row.bg_class == g.bg_class and "cat" not in str(row.prompt)
            assert row.prompt == f"a photo {'on grass' if g.bg_class == 'grass' else 'in snow'}"
            assert row.prompt_template == "a photo ${background}"
        else:  # the object is where its mask says: the mask is carried
            assert (row.split, row.fg_class) == (g.split, g.fg_class)
            assert np.array_equal(_pixels(tmp_path / mode, row.mask_path), mask)
            assert row.prompt is not None and g.fg_class in row.prompt


def test_inpaint_pixels_do_not_depend_on_batch_size_and_regenerate(tmp_path, tiny_sd, guides):
    common = ["--mode", "inpaint", "--steps", "3", "--strength", "1", "--threads", "1",
              "--shard-size", "5", "--no-progress", "--model", str(tiny_sd)]  # fmt: skip
    for name, batch in (("b1", "1"), ("b4", "4")):
        assert main(["dream", str(guides), "--out", str(tmp_path / name), *common,
                     "--batch-size", batch]) == 0  # fmt: skip
    assert tree_digest(tmp_path / "b1") == tree_digest(tmp_path / "b4")
    assert all(r.match for r in regenerate(tmp_path / "b1"))


def test_the_mode_and_its_parameters_decide_the_sample_ids(tmp_path, tiny_sd, guides):
    from dreamshift.dream.runner import plan_dream

    base = DreamConfig(source=str(guides), model=str(tiny_sd), mode="inpaint", steps=2)
    ids = {
        str(changes): plan_dream(base.replace(**changes)).specs[0].sample_id
        for changes in ({}, {"feather": 3}, {"grow": 1}, {"mode": "harmonize"},
                        {"class_context": False}, {"strength": 0.9})
    }  # fmt: skip
    assert len(set(ids.values())) == len(ids)


def test_inpaint_runs_a_nine_channel_inpainting_unet(tmp_path, tiny_sd, guides):
    """An SD inpainting checkpoint's UNet sees the mask and the masked image (9 channels)."""
    import torch
    from diffusers import UNet2DConditionModel

    model = tmp_path / "inpainting"
    shutil.copytree(tiny_sd, model)
    config = json.loads((model / "unet" / "config.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**config, "in_channels": 9})
    unet.save_pretrained(model / "unet", safe_serialization=True)
    cfg = DreamConfig(source=str(guides), model=str(model), mode="inpaint", steps=2,
                      strength=1.0, splits=("test",))  # fmt: skip
    assert dream(cfg, tmp_path / "out", progress=False, batch_size=2).num_failed == 0
    row = ds.read_rows(tmp_path / "out")[0]
    g = {r.sample_id: r for r in ds.read_rows(guides)}[str(row.guide_sample_id)]
    exact = erode(_pixels(guides, g.mask_path), 2)
    made, guide = _pixels(tmp_path / "out", row.path), _pixels(guides, g.path)
    assert np.array_equal(made[exact], guide[exact])
    assert all(r.match for r in regenerate(tmp_path / "out", [row.sample_id]))


def test_a_bad_mask_fails_its_sample_only(tmp_path, tiny_sd, guides):
    src = tmp_path / "guides"
    shutil.copytree(guides, src)
    victim = next(r for r in ds.read_rows(src) if r.split == ds.TEST)
    (src / str(victim.mask_path)).write_bytes(b"not a png")
    cfg = DreamConfig(source=str(src), model=str(tiny_sd), mode="harmonize", steps=2,
                      strength=0.5, splits=("test",))  # fmt: skip
    result = dream(cfg, tmp_path / "out", progress=False, batch_size=2)
    assert result.num_failed == 1
    failed = [r for r in ds.read_rows(tmp_path / "out") if r.status == ds.FAILED]
    assert failed[0].guide_sample_id == victim.sample_id
    assert "mask" in str(failed[0].error) and str(victim.mask_path) in str(failed[0].error)


def test_a_dataset_without_masks_says_which_command_adds_them(tmp_path, tiny_sd, guides, capsys):
    """A dataset of an earlier version has no masks: it stays readable, img2img still runs, and
    a masked mode names the command that composes it again, identically and with masks."""
    old = tmp_path / "old"
    shutil.copytree(guides, old)
    table = ds.read_manifest(old).drop_columns(["mask_path", "mask_sha256"])
    ds.write_table_atomic(table, old / ds.MANIFEST)  # what an earlier version wrote
    for mask in old.rglob("*.mask.png"):
        mask.unlink()
    assert all(r.mask_path is None for r in ds.read_rows(old))
    args = ["--model", str(tiny_sd), "--steps", "2", "--no-progress"]
    assert main(["dream", str(old), "--out", str(tmp_path / "i"), *args]) == 0  # img2img
    assert main(["dream", str(old), "--out", str(tmp_path / "x"), "--mode", "inpaint",
                 *args]) == 1  # fmt: skip
    err = capsys.readouterr().err
    command = f"dreamshift compose --config {old.resolve()}/dataset.json --out NEW"
    assert "composed before dreamshift wrote masks" in err and command in err
    assert not (tmp_path / "x").exists()
    assert main(["compose", "--config", f"{old}/dataset.json", "--out", str(tmp_path / "new"),
                 "--no-progress"]) == 0  # fmt: skip
    again = {r.sample_id: r for r in ds.read_rows(tmp_path / "new")}
    for r in ds.read_rows(old):  # the same samples, byte for byte, now with masks
        assert again[r.sample_id].sha256 == r.sha256 and again[r.sample_id].mask_path


def test_removed_scenes_serve_as_backgrounds_and_as_the_audits_spurious_split(
    tmp_path, tiny_sd, guides
):
    scenes = tmp_path / "scenes"
    cfg = DreamConfig(source=str(guides), model=str(tiny_sd), mode="remove", steps=2,
                      strength=1.0, splits=("test",))  # fmt: skip
    dream(cfg, scenes, progress=False)
    meta = ds.DatasetMeta.read(scenes)
    assert list(meta.splits) == [ds.SPURIOUS] and meta.splits[ds.SPURIOUS].num_samples == 4
    recipe = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=1, anti_per_group=0)
    again = ComposeConfig(classes=("cat",), backgrounds=str(scenes), recipe=recipe)
    compose(again, tmp_path / "pasted", progress=False)  # scenes as compose's backgrounds
    assert main(["grid", str(scenes), "--out", str(tmp_path / "grid.png")]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape[0] == 14 + 64 + 2  # one row: the backgrounds alone, not empty classes
    assert grid[14:78].std() > 10  # holding the scenes, not grey cells
    used = {r.bg_source for r in ds.read_rows(tmp_path / "pasted")}
    assert used <= {r.path for r in ds.read_rows(scenes)} and len(used) == 2
    results = tmp_path / "audit.jsonl"
    assert main(["audit", str(guides), "--split", "test", "--model", "world-cnn", "--spurious",
                 str(scenes), "--results", str(results), "--bootstrap", "10"]) == 0  # fmt: skip
    record = json.loads(results.read_text().splitlines()[0])
    assert record["n_spurious"] == 4 and record["spurious_acc"] is not None
    assert main(["audit", str(guides), "--model", "world-cnn", "--spurious", str(guides),
                 "--results", str(results)]) == 1  # fmt: skip
