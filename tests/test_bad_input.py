"""Your own folders, and what happens with bad files in them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tree_digest
from dreamshift.cli import main
from dreamshift.data import dataset as ds
from dreamshift.errors import BadInputError
from dreamshift.seeding import rng_for
from dreamshift.world.sources import FolderBackgrounds, FolderForegrounds


@pytest.fixture
def folders(world_folders, tmp_path) -> tuple[Path, Path]:
    fg, bg = tmp_path / "fg", tmp_path / "bg"
    for c in ("bear", "cat"):
        shutil.copytree(world_folders / "foregrounds" / c, fg / c)
    for b in ("grass", "water"):
        shutil.copytree(world_folders / "backgrounds" / b, bg / b)
    return fg, bg


def _compose(fg: Path, bg: Path, out: Path, *extra: str) -> int:
    return main([
        "compose", "--out", str(out), "--foregrounds", str(fg), "--backgrounds", str(bg),
        "--train-size", "40", "--val-per-group", "0", "--test-per-group", "10",
        "--anti-per-group", "0", "--shard-size", "16", "--no-progress", *extra,
    ])  # fmt: skip


def test_folders_compose_like_the_world(folders, tmp_path):
    fg, bg = folders
    assert _compose(fg, bg, tmp_path / "out") == 0
    rows = ds.read_manifest(tmp_path / "out").to_pylist()
    assert {r["fg_class"] for r in rows} == {"bear", "cat"}
    assert {r["bg_class"] for r in rows} == {"grass", "water"}
    assert all(r["status"] == "ok" for r in rows)
    assert all((fg / r["fg_source"]).is_file() and (bg / r["bg_source"]).is_file() for r in rows)
    train = {r["fg_source"] for r in rows if r["split"] == "train"}
    test = {r["fg_source"] for r in rows if r["split"] == "test"}
    assert train and test and not train & test  # held-out cut-out files


def test_image_with_a_mask_file(folders, tmp_path):
    fg, _ = folders
    src = next((fg / "cat").glob("*.png"))
    rgba = Image.open(src)
    rgba.convert("RGB").save(fg / "cat" / "photo.jpg")
    rgba.getchannel("A").save(fg / "cat" / "photo.mask.png")
    source = FolderForegrounds(fg)
    assert "cat/photo.mask.png" not in source.files["cat"]
    cut, mask_id, _ = source.cutout("cat/photo.jpg", rng_for(0), 30, False, 0)
    assert mask_id == "cat/photo.mask.png" and max(cut.size) == 30


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("zero.png", b"", "zero-byte"),
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
        ("notes.txt", b"just some notes\n", "not an image"),
    ],
)
def test_bad_foreground_file_raises_naming_it(folders, name, content, message):
    fg, _ = folders
    (fg / "cat" / name).write_bytes(content)
    with pytest.raises(BadInputError, match=rf"{name}.*{message}|{message}.*{name}"):
        FolderForegrounds(fg, share_across_splits=True).cutout(f"cat/{name}", rng_for(0), 30, 0, 0)


def test_mask_of_the_wrong_size_raises_naming_both_files(folders):
    fg, _ = folders
    Image.new("RGB", (40, 30), (200, 10, 10)).save(fg / "cat" / "red.jpg")
    Image.new("L", (20, 20), 255).save(fg / "cat" / "red.mask.png")
    with pytest.raises(
        BadInputError, match=r"red\.mask\.png is 20x20 but its image .*red\.jpg is 40x30"
    ):
        FolderForegrounds(fg).cutout("cat/red.jpg", rng_for(0), 30, False, 0)


def test_image_without_alpha_or_mask_raises(folders):
    fg, _ = folders
    Image.new("RGB", (40, 30)).save(fg / "cat" / "plain.jpg")
    with pytest.raises(BadInputError, match=r"plain\.jpg has no alpha channel"):
        FolderForegrounds(fg).cutout("cat/plain.jpg", rng_for(0), 30, False, 0)


def test_bad_background_file_raises_naming_it(folders):
    _, bg = folders
    (bg / "water" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(BadInputError, match=r"broken\.png"):
        FolderBackgrounds(bg).image("water/broken.png", 64)


def test_batch_run_records_bad_samples_and_makes_the_rest(folders, tmp_path, capsys):
    fg, bg = folders
    (fg / "cat" / "zero.png").write_bytes(b"")
    (fg / "cat" / "notes.txt").write_text("not an image")
    Image.new("RGB", (40, 30)).save(fg / "cat" / "wrong.jpg")
    Image.new("L", (10, 10), 255).save(fg / "cat" / "wrong.mask.png")
    (bg / "grass" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    # ~200 cat samples over 7 files: each bad file is drawn (a 40-sample run misses one with
    # probability ~1 %, as the draws follow the config hash, which holds the folder's path)
    status = _compose(fg, bg, out, "--share-foregrounds", "--train-size", "400")
    assert status == 1  # some samples failed
    rows = ds.read_manifest(out).to_pylist()
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r for r in rows if r["status"] == "ok"]
    bad_fg = {"cat/zero.png", "cat/notes.txt", "cat/wrong.jpg"}
    assert {r["fg_source"] for r in failed if r["fg_source"] in bad_fg} == bad_fg
    for r in failed:
        assert r["path"] is None and r["sha256"] is None
        culprits = {r["fg_source"], r["bg_source"]} & (bad_fg | {"grass/broken.png"})
        assert any(Path(c).name in r["error"] for c in culprits)
    for r in rows:
        bad = r["fg_source"] in bad_fg or r["bg_source"] == "grass/broken.png"
        assert (r["status"] == "failed") == bad
    assert len(ok) > len(failed) > 0
    assert all((out / r["path"]).is_file() for r in ok)
    meta = ds.DatasetMeta.read(out).to_dict()
    assert meta["complete"] and meta["num_failed"] == len(failed)
    capsys.readouterr()
    assert main(["info", str(out), "--failed"]) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("failed ")]
    assert len(listed) == len(failed)


def test_failed_samples_are_retried_once_their_file_is_fixed(folders, tmp_path, capsys):
    """--retry-failed remakes only the failed samples; the result is the clean run's bytes."""
    fg, bg = folders
    broken = bg / "grass" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    assert _compose(fg, bg, out) == 1
    failed = [r for r in ds.read_rows(out) if r.status == ds.FAILED]
    assert failed and {r.bg_source for r in failed} == {"grass/broken.png"}
    assert "--retry-failed" in capsys.readouterr().err  # the hint names the way out
    made = {r.path: (out / r.path).stat().st_mtime_ns for r in ds.read_rows(out) if r.path}
    assert _compose(fg, bg, out) == 1  # a plain rerun: the run is complete, failures stay
    shutil.copyfile(next(p for p in sorted((bg / "grass").iterdir()) if p != broken), broken)
    capsys.readouterr()
    assert _compose(fg, bg, out, "--retry-failed") == 0
    shards = len({r.index // 16 for r in failed})  # --shard-size 16
    assert f"(0 failed, {shards} shards run)" in capsys.readouterr().out
    assert all(r.status == ds.OK for r in ds.read_rows(out))
    assert {p: (out / p).stat().st_mtime_ns for p in made} == made  # the others not redone
    reference = tmp_path / "reference"
    assert _compose(fg, bg, reference) == 0
    assert tree_digest(out) == tree_digest(reference)


def test_an_image_above_max_pixels_is_a_failed_sample_naming_it(folders, tmp_path, monkeypatch):
    """A huge foreground is refused before it is decoded (bounded time and memory), the run
    goes on, and the limit is a flag."""
    from dreamshift.data.images import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, "")  # restored after the test whatever --max-pixels sets
    fg, bg = folders
    Image.new("RGBA", (1200, 1000), (200, 10, 10, 255)).save(fg / "cat" / "huge.png")
    out = tmp_path / "out"
    assert main(["--max-pixels", "1000000", "compose", "--out", str(out), "--foregrounds",
                 str(fg), "--backgrounds", str(bg), "--train-size", "400", "--val-per-group",
                 "0", "--test-per-group", "1", "--anti-per-group", "0", "--share-foregrounds",
                 "--no-progress"]) == 1  # fmt: skip
    failed = [r for r in ds.read_rows(out) if r.status == ds.FAILED]
    assert failed and {r.fg_source for r in failed} == {"cat/huge.png"}
    assert "1200 x 1000 = 1,200,000 pixels, above the limit of 1,000,000" in failed[0].error
    assert "--max-pixels" in failed[0].error


def test_an_out_holding_another_stages_dataset_names_that_stage(folders, tmp_path, capsys):
    fg, bg = folders
    guides, dreamed = tmp_path / "guides", tmp_path / "dreamed"
    assert _compose(fg, bg, guides) == 0
    assert main(["dream", str(guides), "--out", str(dreamed), "--mode", "paste",
                 "--no-progress"]) == 0  # fmt: skip
    before = tree_digest(dreamed)
    capsys.readouterr()
    assert _compose(fg, bg, dreamed) == 1
    err = capsys.readouterr().err
    assert "holds a dataset made by `dreamshift dream`, not by `dreamshift compose`" in err
    assert tree_digest(dreamed) == before


def test_empty_class_folder_stops_before_writing(folders, tmp_path, capsys):
    fg, bg = folders
    (fg / "dog").mkdir()
    assert _compose(fg, bg, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"{fg / 'dog'} is empty" in err
    assert not (tmp_path / "out").exists()


def test_too_few_files_for_held_out_splits_says_what_to_do(folders, tmp_path, capsys):
    fg, bg = folders
    for p in sorted((fg / "cat").glob("*.png"))[2:]:
        p.unlink()
    assert _compose(fg, bg, tmp_path / "out") == 1
    assert "--share-foregrounds" in capsys.readouterr().err
    assert _compose(fg, bg, tmp_path / "out", "--share-foregrounds") == 0


def test_unknown_background_name_is_a_clear_error(folders, tmp_path, capsys):
    fg, bg = folders
    assert _compose(fg, bg, tmp_path / "out", "--assign", "bear=lava") == 1
    assert "lava" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_failed_run_into_an_existing_dataset_changes_nothing(folders, tmp_path):
    fg, bg = folders
    out = tmp_path / "out"
    assert _compose(fg, bg, out) == 0
    before = tree_digest(out, exclude_suffixes=())
    (fg / "dog").mkdir()
    assert _compose(fg, bg, out) == 1  # empty folder
    shutil.rmtree(fg / "dog")
    assert _compose(fg, bg, out, "--seed", "3") == 1  # other config, same --out
    assert tree_digest(out, exclude_suffixes=()) == before


def test_foreign_folder_is_not_overwritten(folders, tmp_path, capsys):
    fg, bg = folders
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert _compose(fg, bg, out) == 1
    assert "not a dreamshift dataset" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep me"
    assert np.array_equal(sorted(p.name for p in out.iterdir()), ["mine.txt"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--background-names", "grass,grass,water"], "more than once"),
        (["--classes", "bear,bear"], "more than once"),
        (["--assign", "bear=grass,bear=water"], "more than one background"),
    ],
)
def test_repeated_names_are_refused(folders, tmp_path, capsys, flags, message):
    fg, bg = folders
    assert _compose(fg, bg, tmp_path / "out", *flags) == 1
    assert message in capsys.readouterr().err


def test_out_that_is_a_file_is_a_clear_error(folders, tmp_path, capsys):
    fg, bg = folders
    (tmp_path / "file").write_text("x")
    assert _compose(fg, bg, tmp_path / "file") == 1
    assert "not a dreamshift dataset" in capsys.readouterr().err


def test_run_killed_while_writing_its_first_metadata_resumes(folders, tmp_path):
    fg, bg = folders
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset.json.tmp").write_text('{"partial')  # what a kill before os.replace leaves
    assert _compose(fg, bg, out) == 0
    assert not (out / "dataset.json.tmp").exists()


def test_a_16_bit_greyscale_image_keeps_its_gradient(folders):
    fg, bg = folders
    grad = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))
    as_8bit = np.rint(grad / 257).astype(np.uint8)  # 0..65535 onto 0..255
    Image.fromarray(grad).save(bg / "water" / "deep.png")  # a 16-bit greyscale PNG
    assert Image.open(bg / "water" / "deep.png").mode in ("I;16", "I")
    background = np.asarray(FolderBackgrounds(bg).image("water/deep.png", 64))
    assert np.array_equal(background, np.stack([as_8bit] * 3, axis=-1))

    Image.fromarray(np.ascontiguousarray(grad[:30, :40])).save(fg / "cat" / "grey.png")
    Image.new("L", (40, 30), 255).save(fg / "cat" / "grey.mask.png")
    cut, _, _ = FolderForegrounds(fg).cutout("cat/grey.png", rng_for(0), 40, False, 0)
    rgb = np.asarray(cut)[..., :3]
    assert np.array_equal(rgb, np.stack([as_8bit[:30, :40]] * 3, axis=-1))
    assert len(np.unique(rgb)) == 40  # a gradient, not white


@pytest.mark.parametrize("where", ["a cut-out file", "a background folder"])
def test_a_symlink_loop_is_an_error_naming_it(folders, tmp_path, capsys, where):
    fg, bg = folders
    loop = fg / "cat" / "loop.png" if where == "a cut-out file" else bg / "lava"
    loop.symlink_to(loop.name)  # points at itself
    assert _compose(fg, bg, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"{loop.name} is a symbolic link loop" in err and str(loop.parent) in err
    assert not (tmp_path / "out").exists()
