"""Exports (HF Parquet + card, webdataset, imagefolder) read back by their own libraries, and
the torch Dataset."""

from __future__ import annotations

import io
import os
import re
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from dreamshift.cli import main
from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data import verification as vt
from dreamshift.data.torch_dataset import METADATA_FIELDS, ShiftDataset
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream


@pytest.fixture(scope="module")
def dreamed(guides, tmp_path_factory) -> Path:
    """The guides' test and train splits dreamed (paste mode), with a verification column."""
    out = tmp_path_factory.mktemp("export") / "gen"
    dream(DreamConfig(source=str(guides), mode="paste", splits=("train", "test")), out,
          progress=False)  # fmt: skip
    ids = [r["sample_id"] for r in ds.read_manifest(out).to_pylist()]
    vt.update_columns(out, ids, {vt.VERIFIED: [i % 2 == 0 for i in range(len(ids))]})
    # votes for the first images only, as `review export` writes them: the others have none
    vt.update_columns(out, ids[:3], {"votes": ['[{"reviewer": "ada"}]'] * 3,
                                     "votes_yes": [3, 3, 3]})  # fmt: skip
    return out


def expected(root: Path) -> dict[str, dict]:
    """sample_id -> (pixels, mask, manifest row, verified) of the usable rows; ``mask``: the
    dataset's own mask file's bytes and pixels (None where the row has none)."""
    verified = dict(zip(*[vt.read_table(root).column(c).to_pylist()
                          for c in ("sample_id", vt.VERIFIED)], strict=True))  # fmt: skip
    return {
        r["sample_id"]: {"pixels": np.asarray(Image.open(root / r["path"]).convert("RGB")),
                         **stored_mask(root, r["mask_path"]), "row": r,
                         "verified": verified[r["sample_id"]]}
        for r in ds.read_manifest(root).to_pylist() if r["status"] == ds.OK
    }  # fmt: skip


def stored_mask(root: Path, rel: str | None) -> dict[str, object]:
    """A dataset's mask file: its boolean pixels (``mask``) and bytes (``mask_bytes``); both
    None where the row has no mask."""
    if rel is None:
        return {"mask": None, "mask_bytes": None}
    data = (root / rel).read_bytes()
    return {"mask": np.asarray(Image.open(io.BytesIO(data))).astype(bool), "mask_bytes": data}


def same_mask(got: np.ndarray, want: np.ndarray | None) -> bool:
    """Whether decoded mask pixels (any mode: nonzero = the object) equal the stored mask."""
    pixels = np.asarray(got)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    return want is not None and np.array_equal(pixels > 0, want)


@pytest.fixture(scope="module")
def part_masked(dreamed, tmp_path_factory) -> Path:
    """``dreamed`` (paste dreams carry their guides' masks) with the first row of each split
    without one, as an img2img dream's row or a background alone has none."""
    import shutil

    out = tmp_path_factory.mktemp("part_masked") / "gen"
    shutil.copytree(dreamed, out)
    rows, seen = [], set()
    for r in ds.read_rows(out):
        assert r.mask_path and r.mask_sha256
        if r.split not in seen and r.status == ds.OK:
            seen.add(r.split)
            (out / str(r.mask_path)).unlink()
            r = r.replace(mask_path=None, mask_sha256=None)
        rows.append(r)
    ds.write_table_atomic(ds.manifest_table(rows), ds.DatasetLayout(out).manifest_path)
    masks = [t["mask"] for t in expected(out).values()]
    assert sum(m is None for m in masks) == 2 and all(m.any() for m in masks if m is not None)
    return out


def test_hf_export_loads_with_datasets_pixels_masks_labels_and_card(part_masked, tmp_path):
    datasets = pytest.importorskip("datasets")
    dreamed = part_masked
    out = tmp_path / "hf"
    assert main(["export", str(dreamed), "--format", "hf", "--out", str(out)]) == 0
    meta = ds.DatasetMeta.read(dreamed).to_dict()
    truth = expected(dreamed)
    # the card's configs name the splits (a cache of its own: `datasets` keys its cache by the
    # folder's name, and a stale one from an earlier run would hide new columns)
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["test", "train"]
    seen = 0
    for split in loaded:
        part = loaded[split]
        assert part.features["label"].names == meta["classes"]
        assert part.features["background"].names == meta["backgrounds"]
        assert isinstance(part.features["mask"], datasets.Image)
        for item in part:
            want = truth[item["sample_id"]]
            assert np.array_equal(np.asarray(item["image"].convert("RGB")), want["pixels"])
            # the mask: the dataset's own mask file's pixels, None where the row has none
            if want["mask"] is None:
                assert item["mask"] is None and item["mask_path"] is None
            else:
                assert same_mask(item["mask"], want["mask"]) and item["mask_path"]
            assert part.features["label"].int2str(item["label"]) == want["row"]["fg_class"]
            assert item["bg_class"] == want["row"]["bg_class"] and item["split"] == split
            assert item["seed"] == want["row"]["seed"] and item["verified"] == want["verified"]
            assert "votes" not in item  # who voted what stays with the dataset
            assert item["votes_yes"] in (3, None)
            seen += 1
    assert seen == len(truth)
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["size_categories"] == ["n<1K"] and header["license"] == "mit"
    assert header["annotations_creators"] == ["machine-generated"]
    assert {c["split"] for c in header["configs"][0]["data_files"]} == {"train", "test"}
    assert meta["content_hash"] in card and "dreamshift dream SOURCE --config" in card
    assert "`mask` (the object's mask" in card
    # the configs beside the card are what `--config` reads back: the runs can be made again
    # (their paths relative to the dataset's folder: no folder of this machine travels)
    run = DreamConfig.from_yaml(out / "dreamshift-config.yaml")
    want = {k: v for k, v in meta["config"].items() if k != "resolved"}
    want["source"] = os.path.relpath(want["source"], dreamed.resolve().parent)
    assert run.to_dict() == want and not os.path.isabs(run.source)
    source = ComposeConfig.from_yaml(out / "dreamshift-source-config.yaml")
    assert source.to_dict() == ds.DatasetMeta.read(meta["config"]["source"]).to_dict()["config"]


def test_webdataset_export_reads_back_with_webdataset_masks_too(part_masked, tmp_path):
    wds = pytest.importorskip("webdataset")
    dreamed = part_masked
    out = tmp_path / "wds"
    assert main(["export", str(dreamed), "--format", "webdataset", "--out", str(out)]) == 0
    truth = expected(dreamed)
    seen = 0
    for tar in sorted(out.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False).decode("rgb8"):
            row = sample["json"]
            want = truth[row["sample_id"]]
            assert np.array_equal(sample["png"], want["pixels"])
            if want["mask"] is None:  # a sample without a mask has no mask member
                assert "mask.png" not in sample and row["mask_path"] is None
            else:
                assert same_mask(sample["mask.png"], want["mask"])
            assert row["fg_class"] == want["row"]["fg_class"]
            assert row["label"] == ds.DatasetMeta.read(dreamed).classes.index(row["fg_class"])
            assert tar.name.startswith(row["split"])
            seen += 1
    assert seen == len(truth)
    # the members as written: the mask file's bytes, unchanged
    import tarfile

    with tarfile.open(next(out.glob("train-*.tar"))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for sample_id, want in truth.items():
        if want["row"]["split"] == "train":
            name = f"{sample_id.replace('.', '_')}.mask.png"
            assert members.get(name) == want["mask_bytes"]


def test_imagefolder_export_reads_back_with_datasets_masks_beside_images(part_masked, tmp_path):
    datasets = pytest.importorskip("datasets")
    dreamed = part_masked
    out = tmp_path / "folder"
    assert main(["export", str(dreamed), "--format", "imagefolder", "--out", str(out)]) == 0
    truth = expected(dreamed)
    lines = pq.read_table(out / "test" / "metadata.parquet").to_pylist()
    for m in lines:
        assert m["file_name"].split("/")[0] == truth[m["sample_id"]]["row"]["fg_class"]
        want = truth[m["sample_id"]]
        if want["mask"] is None:
            assert m["mask_file_name"] is None
        else:  # FILE.mask.png beside FILE.png, the dataset's mask file byte for byte
            assert m["mask_file_name"] == m["file_name"].removesuffix(".png") + ".mask.png"
            assert (out / "test" / m["mask_file_name"]).read_bytes() == want["mask_bytes"]
    loaded = datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == len(lines)
    for item in loaded:
        want = truth[item["sample_id"]]
        assert np.array_equal(np.asarray(item["image"].convert("RGB")), want["pixels"])
        assert item["fg_class"] == want["row"]["fg_class"]
        # HF's loader reads mask_file_name as an Image column `mask`
        if want["mask"] is None:
            assert item["mask"] is None
        else:
            assert same_mask(item["mask"], want["mask"])


def test_every_split_loads_under_its_own_name_from_each_format_with_class_labels(tmp_path):
    """`imagefolder` alone would keep train/validation/test (val renamed) with plain integer
    labels: each export's card maps every split to its files and declares the features."""
    datasets = pytest.importorskip("datasets")
    root = tmp_path / "paste"
    cfg = ComposeConfig(
        classes=("cat", "dog"), background_names=("grass", "snow"),
        recipe=ShiftRecipe(rho=1.0, train_size=4, val_per_group=1, test_per_group=1,
                           anti_per_group=1, spurious_per_class=1),
    )  # fmt: skip
    compose(cfg, root, progress=False)
    counts = Counter(r["split"] for r in ds.read_manifest(root).to_pylist())
    assert set(counts) == {"train", "val", "test", "anti", "spurious"}
    for fmt in ("imagefolder", "hf", "webdataset"):
        out = tmp_path / fmt
        assert main(["export", str(root), "--format", fmt, "--out", str(out)]) == 0
        loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / f"cache-{fmt}"))
        assert {split: len(part) for split, part in loaded.items()} == counts, fmt
        if fmt == "webdataset":  # labels inside each sample's JSON
            continue
        label = loaded["train"].features["label"]
        assert isinstance(label, datasets.ClassLabel) and label.names == ["cat", "dog"], fmt
        assert loaded["train"].features["background"].names == ["grass", "snow"]
        for split, part in loaded.items():
            for item in part:
                name = label.int2str(item["label"]) if item["label"] >= 0 else None
                assert name == item["fg_class"] and item["split"] == split
        card = (out / "README.md").read_text()
        assert f'load_dataset("{fmt}")' in card and "force_redownload" in card


def test_export_refuses_a_full_folder_and_keeps_it(dreamed, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["export", str(dreamed), "--format", "hf", "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_export_clears_what_a_killed_export_left_and_refuses_a_file_in_one_line(
    dreamed, tmp_path, capsys
):
    out = tmp_path / "exports" / "wds"
    out.parent.mkdir()
    for name in (".wds.partial-a1b2", ".wds.partial-c3d4"):  # two exports SIGKILLed mid-write
        (out.parent / name / "part").mkdir(parents=True)
        (out.parent / name / "part" / "test-00000.tar").write_bytes(b"half")
    (out.parent / ".other.partial-e5f6").mkdir()  # another --out's: not ours to remove
    assert main(["export", str(dreamed), "--format", "webdataset", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [".other.partial-e5f6", "wds"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # as mkdir makes it, not 0700

    taken = tmp_path / "a-file"
    taken.write_text("keep")
    capsys.readouterr()
    assert main(["export", str(dreamed), "--format", "hf", "--out", str(taken)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {taken} is a file" in err
    assert taken.read_text() == "keep"


def test_shift_dataset_items_groups_and_verified_only(dreamed):
    import torch

    data = ShiftDataset(dreamed, split="train")
    meta = ds.DatasetMeta.read(dreamed).to_dict()
    truth = expected(dreamed)
    n_bg = len(meta["backgrounds"])
    assert data.metadata_fields == METADATA_FIELDS and data.n_groups == 2 * n_bg
    for i in range(len(data)):
        x, y, metadata = data[i]
        row = data.rows[i]
        pixels = truth[row["sample_id"]]["pixels"]
        assert torch.equal((x * 255).round().to(torch.uint8).permute(1, 2, 0),
                           torch.from_numpy(pixels.copy()))  # fmt: skip
        assert meta["classes"][int(y)] == row["fg_class"]
        bg, aligned, group, y_again = metadata.tolist()
        assert meta["backgrounds"][bg] == row["bg_class"] and aligned == int(row["aligned"])
        assert data.group_name(group) == f"{row['fg_class']}/{row['bg_class']}" and y_again == y
    assert torch.equal(data.group_array, data.metadata_array[:, 2])
    kept = ShiftDataset(dreamed, split="train", verified_only=True)
    assert {r["sample_id"] for r in kept.rows} == {
        s for s, t in truth.items() if t["verified"] and t["row"]["split"] == "train"
    }
    with_transform = ShiftDataset(dreamed, split="test", transform=lambda img: img.size)
    assert with_transform[0][0] == (64, 64)


def test_hf_export_streams_images_a_row_group_at_a_time(part_masked, tmp_path, monkeypatch):
    from dreamshift.export import formats

    dreamed = part_masked
    monkeypatch.setattr(formats, "ROW_GROUP", 3)
    out = tmp_path / "hf"
    formats.export(dreamed, out, "hf")
    train = pq.ParquetFile(out / "data" / "train-00000-of-00001.parquet")
    assert train.metadata.num_row_groups == 3 and train.metadata.num_rows == 8
    truth = expected(dreamed)
    rows = train.read().to_pylist()
    for r in rows:
        pixels = np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB"))
        assert np.array_equal(pixels, truth[r["sample_id"]]["pixels"])
        want = truth[r["sample_id"]]["mask_bytes"]  # the mask file, byte for byte, or null
        assert (r["mask"] and r["mask"]["bytes"]) == want


def test_shift_dataset_masks_are_the_stored_masks_and_a_dataset_without_names_the_fix(
    dreamed, part_masked, guides, tmp_path
):
    import shutil

    import torch

    from dreamshift.compose.config import ShiftRecipe
    from dreamshift.compose.runner import compose
    from dreamshift.data.masks import encode_mask
    from dreamshift.errors import BadInputError, DreamshiftError

    truth = expected(dreamed)
    data = ShiftDataset(dreamed, split="train", masks=True)
    for i in range(len(data)):
        x, _, _, mask = data[i]
        assert mask.dtype == torch.bool and mask.shape == x.shape[1:]
        assert np.array_equal(mask.numpy(), truth[data.rows[i]["sample_id"]]["mask"])
    x, _, _, mask = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert mask.shape == (4, 64, 64) and mask.dtype == torch.bool and x.shape == (4, 3, 64, 64)
    assert len(ShiftDataset(dreamed, split="train")[0]) == 3  # no mask unless asked
    # a background alone has no object: its mask is all False
    recipe = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=1, anti_per_group=0,
                         spurious_per_class=1)  # fmt: skip
    cfg = ComposeConfig(classes=("cat",), background_names=("grass", "snow"), recipe=recipe)
    compose(cfg, tmp_path / "scenes", progress=False)
    scenes = ShiftDataset(tmp_path / "scenes", split=ds.SPURIOUS, masks=True)
    for k in range(len(scenes)):
        x, y, _, mask = scenes[k]
        assert int(y) == -1 and mask.shape == x.shape[1:] and not mask.any()
    # a dataset composed before masks: named, with the command that composes it again
    old = tmp_path / "old"
    shutil.copytree(guides, old)
    rows = [r.replace(mask_path=None, mask_sha256=None) for r in ds.read_rows(old)]
    ds.write_table_atomic(ds.manifest_table(rows), ds.DatasetLayout(old).manifest_path)
    assert len(ShiftDataset(old, split="train")[0]) == 3  # still reads without masks
    fix = f"dreamshift compose --config {old}/dataset.json --out NEW"
    with pytest.raises(DreamshiftError, match=re.escape(fix)) as refused:
        ShiftDataset(old, split="train", masks=True)
    assert str(old) in str(refused.value) and "split 'train'" in str(refused.value)
    # a dream of such guides: compose them again, then dream from those
    fix = f"dreamshift compose --config {guides}/dataset.json --out NEW, then dreamshift dream NEW"
    with pytest.raises(DreamshiftError, match=re.escape(fix)):
        ShiftDataset(part_masked, split="train", masks=True)
    # a mask file changed since the manifest was written: named
    changed = tmp_path / "changed"
    shutil.copytree(guides, changed)
    data = ShiftDataset(changed, split="test", masks=True)
    (changed / data.rows[0]["mask_path"]).write_bytes(encode_mask(np.zeros((64, 64), bool)))
    with pytest.raises(BadInputError, match=re.escape(data.rows[0]["mask_path"])):
        data[0]
