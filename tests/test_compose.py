"""compose: determinism, shift recipes, manifest schema, dataset.json, resume after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import SMALL_BACKGROUNDS, SMALL_CLASSES, small_config, tree_digest
from dreamshift.cli import main
from dreamshift.compose import runner
from dreamshift.compose.config import COATS, ComposeConfig, Placement, ShiftRecipe, saved_config
from dreamshift.compose.runner import compose, compose_image, plan_samples, resolve
from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError
from dreamshift.world import animals


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "ds"
    result = compose(small_config(), root, progress=False)
    assert result.num_failed == 0
    return root


def test_same_config_gives_identical_bytes_whatever_the_worker_count(small_dataset, tmp_path):
    again = tmp_path / "again"
    compose(small_config(), again, workers=2, progress=False)
    assert tree_digest(again) == tree_digest(small_dataset)


def test_a_different_seed_changes_the_pixels(small_dataset, tmp_path):
    other = tmp_path / "other"
    compose(small_config(seed=1), other, progress=False)
    a = ds.read_manifest(small_dataset).column("sha256").to_pylist()
    b = ds.read_manifest(other).column("sha256").to_pylist()
    assert not set(a) & set(b)


def test_group_counts_follow_rho_and_balance(small_dataset):
    rows = ds.read_manifest(small_dataset).to_pylist()
    meta = ds.DatasetMeta.read(small_dataset).to_dict()
    assigned = meta["assignment"]
    assert assigned == {"bear": "grass", "cat": "water", "dog": "snow"}
    train = [r for r in rows if r["split"] == "train"]
    per_class = Counter(r["fg_class"] for r in train)
    assert per_class == {"bear": 10, "cat": 10, "dog": 10}
    on_own = Counter(r["fg_class"] for r in train if r["bg_class"] == assigned[r["fg_class"]])
    assert on_own == {"bear": 8, "cat": 8, "dog": 8}  # round(0.8 * 10)
    assert all(r["aligned"] == (r["bg_class"] == assigned[r["fg_class"]]) for r in rows)
    off = Counter((r["fg_class"], r["bg_class"]) for r in train if not r["aligned"])
    assert sorted(off.values()) == [1] * 6  # the 2 others spread over 2 backgrounds
    for split, per_group in (("val", 1), ("test", 2)):
        groups = Counter((r["fg_class"], r["bg_class"]) for r in rows if r["split"] == split)
        assert len(groups) == 9 and set(groups.values()) == {per_group}
    anti = Counter((r["fg_class"], r["bg_class"]) for r in rows if r["split"] == "anti")
    assert len(anti) == 6 and all(assigned[c] != b for c, b in anti)
    # dataset.json's group counts are the manifest's
    for split in ("train", "val", "test", "anti"):
        counted = Counter((r["fg_class"], r["bg_class"]) for r in rows if r["split"] == split)
        recorded = {
            (c, b): n for c, bs in meta["splits"][split]["groups"].items() for b, n in bs.items()
        }
        assert recorded == dict(counted)
        assert meta["splits"][split]["num_samples"] == sum(counted.values())


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.95, 1.0])
def test_train_alignment_is_exactly_rho(rho):
    run = resolve(small_config(recipe=ShiftRecipe(rho=rho, train_size=300)))
    train = [s for s in plan_samples(run) if s.split == "train"]
    assert len(train) == 300
    assert sum(s.aligned for s in train) == 3 * round(rho * 100)


def test_manifest_schema_and_files(small_dataset):
    table = pq.read_table(small_dataset / "manifest.parquet")
    assert table.schema.equals(ds.MANIFEST_SCHEMA)
    rows = table.to_pylist()
    assert [r["index"] for r in rows] == list(range(len(rows)))
    assert len({r["sample_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None and r["pipeline"] == "paste"
        data = (small_dataset / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert Image.open(small_dataset / r["path"]).size == (64, 64) == (r["width"], r["height"])
        assert r["box_x"] >= 0 and r["box_x"] + r["box_w"] <= 64
        assert r["box_y"] >= 0 and r["box_y"] + r["box_h"] <= 64
        assert 0.3 <= r["scale"] <= 0.5
        assert r["fg_source"].startswith("animal-mnist:") and r["bg_source"].startswith("world:")
        appearance = json.loads(r["appearance"])
        assert set(appearance) >= {"coat", "texture", "colour", "flip", "rotation"}
        assert r["coat_class"] == appearance["coat"] == r["fg_class"]  # typical coats by default
        assert r["render"] == "paste"
    shards = sorted((small_dataset / "shards").glob("*.done"))
    assert len(shards) == -(-len(rows) // 8)
    assert all(json.loads(p.read_text())["failed"] == 0 for p in shards)


def test_test_shapes_were_never_seen_in_training(small_dataset):
    sil = animals.load_silhouettes()
    rows = ds.read_manifest(small_dataset).to_pylist()

    def shapes(splits):
        return {
            sil.masks[int(r["fg_source"].split(":")[1])].tobytes()
            for r in rows
            if r["split"] in splits
        }

    assert not shapes({"train"}) & shapes({"test", "anti", "val"})


def test_dataset_json_contents(small_dataset):
    meta = json.loads((small_dataset / "dataset.json").read_text())
    assert meta["schema_version"] == ds.SCHEMA_VERSION
    assert meta["complete"] is True and meta["num_failed"] == 0
    assert meta["classes"] == ["bear", "cat", "dog"]
    assert meta["backgrounds"] == ["grass", "water", "snow"]
    assert meta["label_maps"]["bg_class"] == {"grass": 0, "water": 1, "snow": 2}
    cfg = ComposeConfig.from_dict(meta["config"])
    assert cfg == resolve(small_config()).cfg  # the resolved config round-trips
    assert meta["num_samples"] == ds.read_manifest(small_dataset).num_rows
    assert set(meta["versions"]) >= {"dreamshift", "numpy", "pillow", "pyarrow"}


def test_center_position_and_feather():
    run = resolve(small_config(placement=Placement(position="center", feather=1.5, max_rotation=0)))
    spec = plan_samples(run)[0]
    img, fields, mask = compose_image(spec, run.cfg, run.fg, run.bg)
    assert img.size == (64, 64)
    assert abs(2 * fields["box_x"] + fields["box_w"] - 64) <= 1
    assert abs(2 * fields["box_y"] + fields["box_h"] - 64) <= 1
    ys, xs = np.nonzero(mask)  # the mask is the cut-out's, not widened by the feather
    x, y, w, h = (fields[k] for k in ("box_x", "box_y", "box_w", "box_h"))
    assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h


def test_a_dataset_written_before_a_config_field_existed_is_still_continued(tmp_path):
    out = tmp_path / "old"
    compose(small_config(), out, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    del meta["config"]["recipe"]["spurious_per_class"]  # as written before the field existed
    meta["complete"] = False
    (out / "dataset.json").write_text(json.dumps(meta))
    before = tree_digest(out, exclude_suffixes=(".json",))
    result = compose(small_config(), out, progress=False)
    assert result.shards_run == 0 and result.num_failed == 0
    assert tree_digest(out, exclude_suffixes=(".json",)) == before


def test_a_dataset_written_before_coats_and_photos_is_read_as_random_pastes(tmp_path):
    """A dataset.json without ``coat`` / ``render`` was made in the shape-only world with naive
    pastes: it reads back as such (not as today's defaults), continues, and its content hash
    and sample ids are those dreamshift gave it then."""
    legacy = small_config(size=32, coat="random", render="paste")
    out = tmp_path / "old"
    compose(legacy, out, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    del meta["config"]["coat"], meta["config"]["render"]  # as written before the fields existed
    meta["complete"] = False
    (out / "dataset.json").write_text(json.dumps(meta))
    read = saved_config(meta["config"])
    assert (read["coat"], read["render"]) == ("random", "paste")
    assert read == resolve(legacy).cfg.to_dict()
    before = tree_digest(out, exclude_suffixes=(".json",))
    result = compose(legacy, out, progress=False)
    assert result.shards_run == 0 and result.num_failed == 0
    assert tree_digest(out, exclude_suffixes=(".json",)) == before
    with pytest.raises(DreamshiftError, match=r"different config \(differs in \['coat'\]\)"):
        compose(small_config(size=32), out, progress=False)  # typical coats: another dataset
    assert all(r["coat_class"] is None for r in ds.read_manifest(out).to_pylist())


def test_content_hash_of_random_pastes_is_the_hash_from_before_coats_existed():
    legacy = small_config(size=32, coat="random", render="paste")
    d = legacy.to_dict()  # the dict dreamshift hashed before coat, render, ... existed
    for key in ("shard_size", "coat", "render", "paste", "class_names", "per_class"):
        d.pop(key)
    for key in ("spurious_per_class", "conflict_per_group", "scale_bins", "position_bins"):
        d["recipe"].pop(key)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert legacy.content_hash() == digest
    assert legacy.content_hash() == "daa99bc0241c"  # computed by dreamshift before this change
    others = {
        small_config(size=32).content_hash(),  # typical coats (the default)
        small_config(size=32, coat="random", render="photo").content_hash(),
        small_config(size=32, render="photo").content_hash(),
    }
    assert len(others) == 3 and legacy.content_hash() not in others


CONFLICT_ARGS = [
    "--classes", ",".join(SMALL_CLASSES), "--background-names", ",".join(SMALL_BACKGROUNDS),
    "--size", "32", "--train-size", "0", "--val-per-group", "0", "--test-per-group", "1",
    "--anti-per-group", "0", "--conflict-per-group", "1", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def conflict_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("conflict") / "ds"
    assert main(["compose", "--out", str(root), *CONFLICT_ARGS]) == 0
    return root


def test_conflict_split_puts_each_shape_in_another_class_coat(conflict_dataset):
    rows = ds.read_manifest(conflict_dataset).to_pylist()
    conflict = [r for r in rows if r["split"] == ds.CONFLICT]
    groups = Counter((r["fg_class"], r["bg_class"]) for r in conflict)
    assert len(groups) == 9 and set(groups.values()) == {1}
    for r in conflict:
        assert r["status"] == ds.OK and r["render"] == "paste"
        assert r["coat_class"] in animals.CLASSES and r["coat_class"] != r["fg_class"]
        assert json.loads(r["appearance"])["coat"] == r["coat_class"]
    test = [r for r in rows if r["split"] == ds.TEST]
    assert len(test) == 9 and all(r["coat_class"] == r["fg_class"] for r in test)
    meta = ds.DatasetMeta.read(conflict_dataset).to_dict()
    assert meta["splits"]["conflict"]["num_samples"] == 9
    assert meta["config"]["recipe"]["conflict_per_group"] == 1


def test_conflict_coats_are_coats_of_the_dataset_classes(conflict_dataset):
    rows = ds.read_manifest(conflict_dataset).to_pylist()
    coats = {r["coat_class"] for r in rows if r["split"] == ds.CONFLICT}
    assert coats <= set(SMALL_CLASSES)


def test_folder_foregrounds_ignore_the_coat_and_keep_their_hash(world_folders):
    fg = str(world_folders / "foregrounds")
    typical, random = (resolve(small_config(foregrounds=fg, coat=c)).cfg for c in COATS)
    assert typical.coat == random.coat == "random"
    assert typical.content_hash() == random.content_hash()


def test_random_coats_record_no_coat_class_and_the_render_column_follows_the_config(tmp_path):
    recipe = ShiftRecipe(train_size=3, val_per_group=0, test_per_group=1, anti_per_group=0,
                         spurious_per_class=1)  # fmt: skip
    out = tmp_path / "photos"
    compose(small_config(size=32, coat="random", render="photo", recipe=recipe), out,
            progress=False)  # fmt: skip
    rows = ds.read_manifest(out).to_pylist()
    animals_rows = [r for r in rows if r["split"] != ds.SPURIOUS]
    assert len(animals_rows) == 3 + 9
    for r in animals_rows:
        appearance = json.loads(r["appearance"])
        assert r["coat_class"] is None and appearance["coat"] == "random"
        assert r["render"] == "photo" and appearance["photo"]["render"] == "photo"
    spurious = [r for r in rows if r["split"] == ds.SPURIOUS]
    assert len(spurious) == 3 and all(r["render"] is None for r in spurious)  # no animal


def test_a_conflict_split_without_typical_world_coats_is_refused(world_folders, tmp_path, capsys):
    conflict = ShiftRecipe(train_size=0, test_per_group=1, conflict_per_group=1)
    folders = {
        "foregrounds": str(world_folders / "foregrounds"),
        "backgrounds": str(world_folders / "backgrounds"),
    }
    for name, overrides in (("random", {"coat": "random"}), ("folders", folders)):
        with pytest.raises(DreamshiftError, match=r"conflict split .* --coat typical"):
            compose(small_config(size=32, recipe=conflict, **overrides), tmp_path / name)
    out = tmp_path / "cli"
    assert main(["compose", "--out", str(out), *CONFLICT_ARGS, "--coat", "random"]) == 1
    assert "needs the world's foregrounds with --coat typical" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_rerun_of_a_finished_dataset_does_nothing_and_a_new_config_is_refused(small_dataset):
    before = tree_digest(small_dataset, exclude_suffixes=())
    result = compose(small_config(), small_dataset, progress=False)
    assert result.shards_run == 0
    with pytest.raises(DreamshiftError, match="different config"):
        compose(small_config(seed=5), small_dataset, progress=False)
    assert tree_digest(small_dataset, exclude_suffixes=()) == before


def test_unknown_names_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(DreamshiftError, match=r"unknown background name \['lava'\]"):
        compose(small_config(background_names=("grass", "lava")), tmp_path / "a")
    with pytest.raises(DreamshiftError, match=r"unknown class \['unicorn'\]"):
        compose(small_config(classes=("bear", "unicorn")), tmp_path / "b")
    bad = replace(small_config().recipe, assignment=(("bear", "lava"),))
    with pytest.raises(DreamshiftError, match="lava"):
        compose(small_config(recipe=bad), tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_an_error_that_is_not_a_bad_input_stops_the_run_and_the_rerun_resumes(
    small_dataset, tmp_path, monkeypatch
):
    real = runner.compose_image

    def compose_image(spec, *args):
        if spec.index == 20:  # in shard 2
            raise RuntimeError("a bug (injected)")
        return real(spec, *args)

    monkeypatch.setattr(runner, "compose_image", compose_image)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"a bug \(injected\)"):
        compose(small_config(), out, progress=False)
    layout = ds.DatasetLayout(out)
    assert [ds.shard_is_done(layout, k) for k in range(4)] == [True, True, False, False]
    assert not (out / "manifest.parquet").exists()

    monkeypatch.undo()  # the bug fixed
    result = compose(small_config(), out, progress=False)
    shards = len(list((small_dataset / "shards").glob("*.done")))
    assert (result.shards_run, result.num_failed) == (shards - 2, 0)
    assert tree_digest(out) == tree_digest(small_dataset)


COMPOSE_ARGS = [
    "--classes", "bear,cat,dog,cow", "--background-names", "grass,water,snow,night",
    "--train-size", "400", "--test-per-group", "4", "--val-per-group", "1",
    "--anti-per-group", "1", "--shard-size", "16", "--size", "96", "--no-progress",
]  # fmt: skip


def _compose_cmd(out, workers=1):
    return [
        sys.executable, "-m", "dreamshift.cli", "compose", "--out", str(out), *COMPOSE_ARGS,
        "--workers", str(workers),
    ]  # fmt: skip


@pytest.mark.parametrize(("kill_after_done_shards", "workers"), [(1, 1), (7, 1), (3, 2)])
def test_resume_after_sigkill_is_byte_identical(tmp_path, kill_after_done_shards, workers):
    reference = tmp_path / "reference"
    subprocess.run(_compose_cmd(reference), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _compose_cmd(killed, workers), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((killed / "shards").glob("*.done"))) >= kill_after_done_shards:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "manifest.parquet").exists()
    done_before = len(list((killed / "shards").glob("*.done")))
    assert done_before >= kill_after_done_shards

    resumed = subprocess.run(_compose_cmd(killed), capture_output=True, text=True, check=True)
    shards_run = int(resumed.stdout.split("failed, ")[1].split(" shards")[0])
    total = len(list((reference / "shards").glob("*.done")))
    assert shards_run == total - done_before  # finished shards were not redone
    assert tree_digest(killed) == tree_digest(reference)


def test_rect_paste_puts_the_whole_foreground_photo_as_a_square(tmp_path):
    """D3S's code pastes the foreground image itself, centre-cropped, with no mask."""
    fg = tmp_path / "fg"
    for c in ("cat", "dog"):
        (fg / c).mkdir(parents=True)
        for i in range(3):  # a 40x30 photo: left half red, right half blue (no alpha, no mask)
            photo = np.zeros((30, 40, 3), np.uint8)
            photo[:, :20] = (200, 0, 0)
            photo[:, 20:] = (0, 0, 200)
            Image.fromarray(photo).save(fg / c / f"{i}.jpg", quality=100)
    bg = tmp_path / "bg"
    for b in ("grass", "snow"):
        (bg / b).mkdir(parents=True)
        Image.new("RGB", (64, 64), (0, 255, 0)).save(bg / b / "0.png")
    out = tmp_path / "rect"
    assert main(["compose", "--out", str(out), "--foregrounds", str(fg), "--backgrounds", str(bg),
                 "--paste", "rect", "--scale", "0.5", "--max-rotation", "0", "--no-flip",
                 "--train-size", "4", "--val-per-group", "0", "--test-per-group", "1",
                 "--anti-per-group", "0"]) == 0  # fmt: skip
    for r in ds.read_manifest(out).to_pylist():
        assert r["mask_source"] == "rect" and json.loads(r["appearance"])["paste"] == "rect"
        assert (r["box_w"], r["box_h"]) == (32, 32)
        img = np.asarray(Image.open(out / r["path"]).convert("RGB")).astype(int)
        x, y = r["box_x"], r["box_y"]
        box = img[y : y + 32, x : x + 32]
        # the centre 30x30 crop of the photo, scaled: red left, blue right, no green inside
        assert box[:, :12, 0].mean() > 150 and box[:, -12:, 2].mean() > 150
        assert box[..., 1].max() < 60
        outside = np.ones(img.shape[:2], bool)
        outside[y : y + 32, x : x + 32] = False
        assert (img[outside] == (0, 255, 0)).all()
        assert np.array_equal(np.asarray(Image.open(out / r["mask_path"])), ~outside)  # the box
    assert ds.DatasetMeta.read(out).to_dict()["config"]["paste"] == "rect"
    assert main(["compose", "--out", str(tmp_path / "w"), "--paste", "rect"]) == 1  # world


def test_d3s_presets_resolve_to_the_official_settings_and_flags_win(tmp_path):
    from dreamshift.cli import build_parser
    from dreamshift.cli.compose import config as compose_config
    from dreamshift.cli.dream import config as dream_config

    parser = build_parser()
    d = dream_config(parser.parse_args(["dream", "SRC", "--out", "o", "--preset", "d3s"]))
    assert (d.model, d.mode, d.scheduler, d.steps, d.guidance_scale, d.strength, d.width,
            d.height, d.prompts) == ("CompVis/stable-diffusion-v1-4", "img2img", "ddim", 50,
                                     5.0, 0.9, 512, 512, "d3s")  # fmt: skip
    d = dream_config(parser.parse_args(["dream", "SRC", "--out", "o", "--preset", "d3s",
                                        "--steps", "20", "--model", "tiny-dream"]))  # fmt: skip
    assert (d.steps, d.model, d.strength) == (20, "tiny-dream", 0.9)
    c = compose_config(parser.parse_args(["compose", "--out", "o", "--preset", "d3s",
                                          "--foregrounds", "fg"]))  # fmt: skip
    assert (c.size, c.paste, c.placement.scale, c.placement.flip, c.placement.max_rotation) == (
        512,
        "rect",
        (0.4, 0.4),
        False,
        0.0,
    )
    assert "d3s" in parser._subparsers._group_actions[0].choices["dream"].format_help()


# ForAug's size and center bias: the test samples again at fixed scales and grid positions
BINS = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=1, anti_per_group=0,
                   scale_bins=(0.25, 0.5), position_bins=3)  # fmt: skip
NO_TURN = Placement(scale=(0.2, 0.4), max_rotation=0)  # the cut-out's side is exactly the scale's


@pytest.fixture(scope="module")
def bins_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bins") / "ds"
    result = compose(small_config(size=48, recipe=BINS, placement=NO_TURN), root, progress=False)
    assert result.num_failed == 0
    return root


def _copies(rows, split):
    """Each test row with its rows in ``split``, in index order (made from its seed)."""
    tests = [r for r in rows if r["split"] == ds.TEST]
    return [(t, [r for r in rows if r["split"] == split and r["seed"] == t["seed"]])
            for t in tests]  # fmt: skip


def test_size_split_holds_every_test_sample_at_each_scale_at_the_centre(bins_dataset):
    rows = ds.read_manifest(bins_dataset).to_pylist()
    assert Counter(r["split"] for r in rows) == {"test": 9, "size": 18, "position": 81}
    meta = ds.DatasetMeta.read(bins_dataset)
    assert meta.splits["size"].num_samples == 18 and meta.splits["position"].num_samples == 81
    chash = meta.content_hash
    assert [r["sample_id"] for r in rows] == [f"{chash}-{i:07d}" for i in range(len(rows))]
    for t, copies in _copies(rows, ds.SIZE):
        assert [r["scale"] for r in copies] == [0.25, 0.5]
        for r in copies:
            same = ("fg_class", "bg_class", "fg_source", "bg_source", "coat_class", "aligned")
            assert all(r[k] == t[k] for k in same) and r["status"] == ds.OK
            w, h = r["box_w"], r["box_h"]
            assert max(w, h) == max(4, round(r["scale"] * 48))  # as compose sizes the cut-out
            assert (r["box_x"], r["box_y"]) == ((48 - w) // 2, (48 - h) // 2)
            mask = np.asarray(Image.open(bins_dataset / r["mask_path"]))
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min()) >= (r["box_x"], r["box_y"])
            assert (xs.max(), ys.max()) < (r["box_x"] + w, r["box_y"] + h)


def test_position_split_centres_every_test_sample_in_each_grid_cell(bins_dataset):
    rows = ds.read_manifest(bins_dataset).to_pylist()
    cell = 48 / 3
    for t, copies in _copies(rows, ds.POSITION):
        assert len(copies) == 9 and all(r["fg_source"] == t["fg_source"] for r in copies)
        for k, r in enumerate(copies):  # row by row
            assert r["scale"] == 0.2 and r["mask_path"] is not None
            x, y, w, h = (r[f"box_{c}"] for c in "xywh")
            assert 0 <= x <= 48 - w and 0 <= y <= 48 - h  # inside the image
            row, col = divmod(k, 3)
            assert col * cell <= x + w / 2 < (col + 1) * cell
            assert row * cell <= y + h / 2 < (row + 1) * cell


def test_datasets_without_bins_keep_their_hash_sample_ids_and_dataset_json(small_dataset):
    assert small_config().content_hash() == "c743b5421ce5"  # computed before the bins existed
    explicit = small_config(recipe=replace(small_config().recipe, scale_bins=(), position_bins=0))
    assert explicit.content_hash() == "c743b5421ce5"
    run = resolve(small_config())  # sample ids: the resolved config's hash, also unchanged
    assert run.cfg.content_hash() == "b5633de41f6a"
    assert {s.split for s in plan_samples(run)} == {"train", "val", "test", "anti"}
    rows = ds.read_manifest(small_dataset).to_pylist()
    assert [r["sample_id"] for r in rows] == [f"b5633de41f6a-{i:07d}" for i in range(len(rows))]
    splits = json.loads((small_dataset / "dataset.json").read_text())["splits"]
    assert not {"size", "position"} & set(splits)  # listed only when planned
    with_bins = small_config(recipe=replace(small_config().recipe, scale_bins=(0.5,)))
    assert with_bins.content_hash() != "c743b5421ce5"


def test_bins_are_checked_before_anything_is_written(tmp_path, capsys):
    for recipe, message in (
        (replace(BINS, position_bins=2), "at least 3 x 3"),
        (replace(BINS, scale_bins=(0.3, 0.3)), "distinct scales in"),
        (replace(BINS, scale_bins=(0.0, 0.5)), "distinct scales in"),
        (replace(BINS, scale_bins=(1.5,)), "distinct scales in"),
    ):
        with pytest.raises(DreamshiftError, match=message):
            compose(small_config(size=48, recipe=recipe), tmp_path / "a")
    wide = small_config(size=32, recipe=replace(BINS, position_bins=4),
                        placement=Placement(scale=(0.5, 0.5), max_rotation=10))  # fmt: skip
    with pytest.raises(DreamshiftError, match=r"up to 20 px wide .* would lie in the next one"):
        compose(wide, tmp_path / "b")
    args = ["compose", "--out", str(tmp_path / "c"), "--size", "32", "--test-per-group", "1",
            "--train-size", "0", "--classes", "cat,dog",
            "--background-names", "grass,snow"]  # fmt: skip
    assert main([*args, "--scale-bins", "0.3,0.3"]) == 1
    assert "distinct scales" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main([*args, "--scale-bins", "0.3,0.6", "--position-bins", "3", "--no-progress"]) == 0
    recipe = ds.DatasetMeta.read(tmp_path / "c").recipe
    assert (recipe["scale_bins"], recipe["position_bins"]) == ([0.3, 0.6], 3)
