"""D3S on ImageNet-style data: a wnid folder tree, class names and WordNet definitions from
timm's data files (a stand-in package with the same files here), per-class sampling."""

from __future__ import annotations

import heapq
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamshift.cli import main
from dreamshift.data import dataset as ds
from dreamshift.data.imagenet import synset_table
from dreamshift.dream.prompts import load_recipe
from dreamshift.errors import DreamshiftError
from dreamshift.world.sources import _split_of

SYNSETS = {  # wnid: (lemmas, gloss), in timm's file formats
    "n01440764": ("tench, Tinca tinca", "freshwater dace-like game fish"),
    "n02012849": ("crane", "large long-necked wading bird"),
    "n03126707": ("crane", "lifts and moves heavy objects"),
}


@pytest.fixture
def timm_files(tmp_path, monkeypatch) -> Path:
    """A package named timm holding only timm's ImageNet data files (it is never imported)."""
    info = tmp_path / "site" / "timm" / "data" / "_info"
    info.mkdir(parents=True)
    (info.parents[1] / "__init__.py").write_text("raise ImportError('not for import')\n")
    (info / "imagenet_synsets.txt").write_text("".join(f"{w}\n" for w in SYNSETS))
    (info / "imagenet_synset_to_lemma.txt").write_text(
        "".join(f"{w}\t{lemma}\n" for w, (lemma, _) in SYNSETS.items())
    )
    (info / "imagenet_synset_to_definition.txt").write_text(
        "".join(f"{w}\t{gloss}\n" for w, (_, gloss) in SYNSETS.items())
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    return info


def test_imagenet_names_and_definitions_come_from_timms_files(timm_files):
    table = synset_table()
    assert [s.name for s in table.values()] == ["tench", "crane_n02012849", "crane_n03126707"]
    recipe = load_recipe("d3s-imagenet-1k")
    assert recipe.render(0, "crane_n02012849", "snow") == (
        "a photo of a crane, large long-necked wading bird, in snow"
    )
    assert recipe.render(0, "tench", "grass").startswith("a photo of a tench, freshwater")


def test_without_timm_the_error_says_where_the_table_comes_from(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DreamshiftError, match="pip install timm"):
        synset_table()


@pytest.fixture
def tree(tmp_path) -> Path:
    """train/<wnid>/*.JPEG photos (7 per class) and two backgrounds."""
    rng = np.random.default_rng(0)
    for w in SYNSETS:
        (tmp_path / "train" / w).mkdir(parents=True)
        for i in range(7):
            photo = rng.integers(0, 255, (48, 60, 3), dtype=np.uint8)
            Image.fromarray(photo).save(tmp_path / "train" / w / f"{w}_{i}.JPEG")
    for b in ("grass", "snow"):
        (tmp_path / "bg" / b).mkdir(parents=True)
        Image.new("RGB", (64, 64), (0, 200, 0)).save(tmp_path / "bg" / b / "0.png")
    return tmp_path


def test_an_imagenet_tree_composes_by_class_name_with_rect_pastes(timm_files, tree):
    out = tree / "paste"
    args = ["--foregrounds", str(tree / "train"), "--backgrounds", str(tree / "bg"),
            "--class-names", "imagenet-1k", "--per-class", "5", "--paste", "rect",
            "--train-size", "12", "--val-per-group", "0", "--test-per-group", "1",
            "--anti-per-group", "0"]  # fmt: skip
    assert main(["compose", "--out", str(out), *args]) == 0
    meta = ds.DatasetMeta.read(out).to_dict()
    assert meta["classes"] == ["tench", "crane_n02012849", "crane_n03126707"]
    rows = ds.read_manifest(out).to_pylist()
    wnid_of = {s.name: w for w, s in synset_table().items()}
    for w in SYNSETS:  # per class, only the 5 files with the smallest path hashes
        files = [f"{w}/{p.name}" for p in (tree / "train" / w).iterdir()]
        chosen = set(heapq.nsmallest(5, files, key=_split_of))
        used = {r["fg_source"] for r in rows if r["fg_class"] and wnid_of[r["fg_class"]] == w}
        assert used and used <= chosen
    assert all(r["mask_source"] == "rect" for r in rows if r["fg_class"])


def test_a_tsv_names_the_classes_and_feeds_a_recipes_definitions(tree):
    tsv = tree / "classes.tsv"
    tsv.write_text("".join(f"{w}\tclass{i}\tdefinition {i}\n" for i, w in enumerate(SYNSETS)))
    out = tree / "paste"
    args = ["--foregrounds", str(tree / "train"), "--backgrounds", str(tree / "bg"),
            "--class-names", str(tsv), "--train-size", "6", "--val-per-group", "0",
            "--test-per-group", "0", "--anti-per-group", "0", "--share-foregrounds",
            "--paste", "rect"]  # fmt: skip
    assert main(["compose", "--out", str(out), *args]) == 0
    assert ds.DatasetMeta.read(out).to_dict()["classes"] == ["class0", "class1", "class2"]
    recipe_file = tree / "mine.yaml"
    recipe_file.write_text(
        "templates: ['${class_name}: ${definition}']\n"
        "definitions_from: classes.tsv\ndefinitions: {class2: mine}\n"
    )
    recipe = load_recipe(str(recipe_file))
    assert recipe.render(0, "class1", None) == "class1: definition 1"
    assert recipe.render(0, "class2", None) == "class2: mine"  # the recipe's own entry wins


def test_folders_that_are_no_wnids_are_refused_with_the_names(tree, timm_files, capsys):
    (tree / "train" / "zebra").mkdir()
    args = ["--foregrounds", str(tree / "train"), "--backgrounds", str(tree / "bg"),
            "--class-names", "imagenet-1k"]  # fmt: skip
    assert main(["compose", "--out", str(tree / "x"), *args]) == 1
    assert "zebra" in capsys.readouterr().err
