"""Exports (HF Parquet + card, webdataset, imagefolder) read back by their own libraries, and
the torch Dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dreamshift.cli import main
from dreamshift.compose.config import ComposeConfig
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
    """sample_id -> (pixels, manifest row, verified) of the usable rows."""
    verified = dict(zip(*[vt.read_table(root).column(c).to_pylist()
                          for c in ("sample_id", vt.VERIFIED)], strict=True))  # fmt: skip
    return {
        r["sample_id"]: {"pixels": np.asarray(Image.open(root / r["path"]).convert("RGB")),
                         "row": r, "verified": verified[r["sample_id"]]}
        for r in ds.read_manifest(root).to_pylist() if r["status"] == ds.OK
    }  # fmt: skip


def test_hf_export_loads_with_datasets_pixels_labels_and_card(dreamed, tmp_path):
    datasets = pytest.importorskip("datasets")
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
        for item in part:
            want = truth[item["sample_id"]]
            assert np.array_equal(np.asarray(item["image"].convert("RGB")), want["pixels"])
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
    # the configs beside the card are what `--config` reads back: the runs can be made again
    run = DreamConfig.from_yaml(out / "dreamshift-config.yaml")
    assert run.to_dict() == {k: v for k, v in meta["config"].items() if k != "resolved"}
    source = ComposeConfig.from_yaml(out / "dreamshift-source-config.yaml")
    assert source.to_dict() == ds.DatasetMeta.read(meta["config"]["source"]).to_dict()["config"]


def test_webdataset_export_reads_back_with_webdataset(dreamed, tmp_path):
    wds = pytest.importorskip("webdataset")
    out = tmp_path / "wds"
    assert main(["export", str(dreamed), "--format", "webdataset", "--out", str(out)]) == 0
    truth = expected(dreamed)
    seen = 0
    for tar in sorted(out.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False).decode("rgb8"):
            row = sample["json"]
            want = truth[row["sample_id"]]
            assert np.array_equal(sample["png"], want["pixels"])
            assert row["fg_class"] == want["row"]["fg_class"]
            assert row["label"] == ds.DatasetMeta.read(dreamed).classes.index(row["fg_class"])
            assert tar.name.startswith(row["split"])
            seen += 1
    assert seen == len(truth)


def test_imagefolder_export_reads_back_with_datasets(dreamed, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "folder"
    assert main(["export", str(dreamed), "--format", "imagefolder", "--out", str(out)]) == 0
    truth = expected(dreamed)
    lines = [json.loads(x) for x in (out / "test" / "metadata.jsonl").read_text().splitlines()]
    for m in lines:
        assert m["file_name"].split("/")[0] == truth[m["sample_id"]]["row"]["fg_class"]
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out / "test"), split="train",
                                   cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert len(loaded) == len(lines)
    for item in loaded:
        want = truth[item["sample_id"]]
        assert np.array_equal(np.asarray(item["image"].convert("RGB")), want["pixels"])
        assert item["fg_class"] == want["row"]["fg_class"]


def test_export_refuses_a_full_folder_and_keeps_it(dreamed, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["export", str(dreamed), "--format", "hf", "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


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


def test_hf_export_streams_images_a_row_group_at_a_time(dreamed, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from dreamshift.export import formats

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
