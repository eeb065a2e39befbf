"""Recombination while training (ForAug, Nauen et al. 2025): each training image's object on a
background drawn per step. The pixels are the object's and the new background's, the draw is a
function of (seed, epoch, draw) (weights do not depend on loader workers, a resumed run ends
where an uninterrupted one does), and images without masks are refused up front."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import small_config
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data.loading import ImageTable, split_table
from dreamshift.data.masks import erode
from dreamshift.data.recombine import Recombination, object_box, paste_object
from dreamshift.errors import DreamshiftError
from dreamshift.learn.run import LearnConfig, learn
from dreamshift.models.classifier import Classifier
from dreamshift.train.checkpoint import load_state
from dreamshift.world.sources import background_source


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recombine") / "ds"
    recipe = ShiftRecipe(rho=0.9, train_size=32, val_per_group=0, test_per_group=1,
                         anti_per_group=0)  # fmt: skip
    compose(small_config(recipe=recipe), root, progress=False)
    return root


class Flat:
    """Backgrounds of one colour per label: where each pixel came from is plain to see."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def choose(self, name: str, rng: np.random.Generator) -> str:
        return name

    def image(self, source_id: str, size: int) -> Image.Image:
        shade = 10 + 40 * self.names.index(source_id)
        return Image.new("RGB", (size, size), (shade, shade, shade))


def table_of(root: Path):
    meta = ds.DatasetMeta.read(root)
    return split_table(root, "train", list(meta.classes), list(meta.backgrounds)), meta


def test_the_object_keeps_its_pixels_and_the_rest_is_the_new_background(world):
    table, meta = table_of(world)
    labels = tuple(meta.backgrounds)
    pixels = table.read(0)
    mask = table.read_mask(0, (pixels.shape[1], pixels.shape[0]))
    keep = Recombination(Flat(labels), labels, rho=0.0, position="keep", feather=0.0)
    out, bg = keep(pixels, mask, int(table.bg[0]), np.random.default_rng(1))
    shade = 10 + 40 * bg
    assert np.array_equal(out[mask], pixels[mask])  # the object, pixel for pixel
    assert (out[~mask] == shade).all()  # nothing of its old surroundings
    # feathered, the object's inside is still its own; its rim blends into the new scene
    soft = replace(keep, feather=1.0)(pixels, mask, int(table.bg[0]), np.random.default_rng(1))
    inside = erode(mask, 3)
    assert np.array_equal(soft[0][inside], pixels[inside]) and (soft[0][~mask] == shade).all()
    # moved and scaled: the object's box is where the draw put it, at the drawn size
    moved = Recombination(Flat(labels), labels, scale=(0.5, 0.5), position="center", feather=0)
    out, _ = moved(pixels, mask, 0, np.random.default_rng(1))
    x, y, w, h = object_box(np.any(out != out[0, 0], axis=2))
    assert max(w, h) == 32 and abs((x + w / 2) - 32) <= 1 and abs((y + h / 2) - 32) <= 1


def test_paste_object_by_hand():
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[1, 1] = pixels[1, 2] = 100
    mask = pixels[..., 0] > 0
    background = np.full((4, 4, 3), 7, np.uint8)
    out = paste_object(pixels, mask, background, (0, 3, 2, 1))
    expected = background.copy()
    expected[3, 0] = expected[3, 1] = 100
    assert np.array_equal(out, expected)


def test_the_draw_depends_on_its_generator_only_and_the_labels_follow_rho(world):
    table, meta = table_of(world)
    labels = tuple(meta.backgrounds)
    pixels = table.read(0)
    mask = table.read_mask(0, (64, 64))
    rec = Recombination(background_source("world"), labels, scale=(0.3, 0.6))
    a, bg_a = rec(pixels, mask, 0, np.random.default_rng(5))
    b, bg_b = rec(pixels, mask, 0, np.random.default_rng(5))
    assert np.array_equal(a, b) and bg_a == bg_b
    assert not np.array_equal(a, rec(pixels, mask, 0, np.random.default_rng(6))[0])
    never = replace(rec, p=0.0)
    assert never(pixels, mask, 1, np.random.default_rng(0))[0] is pixels
    drawn = [rec(pixels, mask, 1, np.random.default_rng(s))[1] for s in range(300)]
    assert set(drawn) == set(range(len(labels)))  # uniform over every label
    own = replace(rec, rho=1.0)
    assert {own(pixels, mask, 1, np.random.default_rng(s))[1] for s in range(20)} == {1}
    with pytest.raises(DreamshiftError, match="have no"):
        Recombination(Flat(labels[:1]), labels)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = load_state(folder / "checkpoint.safetensors")["state"]["model"]
    return state


def test_learn_recombines_in_its_loader_workers_deterministically_and_resumes(world, tmp_path):
    cfg = LearnConfig(epochs=2, batch_size=8, eval_splits=(), recombine="world",
                      recombine_scale=(0.3, 0.5))  # fmt: skip
    runs = {w: learn(world, tmp_path / f"w{w}", cfg, log=lambda *_: None, loader_workers=w)
            for w in (0, 2)}  # fmt: skip
    a, b = weights(runs[0]), weights(runs[2])
    assert all(torch.equal(a[k], b[k]) for k in a)

    def stop_after_first_epoch(message: str) -> None:
        if "epoch 1/2" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        learn(world, tmp_path / "resumed", cfg, log=stop_after_first_epoch, loader_workers=2)
    resumed = learn(world, tmp_path / "resumed", cfg, log=lambda *_: None, loader_workers=2)
    c = weights(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a)

    plain = learn(world, tmp_path / "plain", replace(cfg, recombine=""), log=lambda *_: None)
    assert plain.name != runs[0].name  # another run, named apart
    assert not torch.equal(weights(plain)["classifier.weight"], a["classifier.weight"])
    # p = 0 draws but changes no image: the weights of a run without recombination
    never = learn(world, tmp_path / "never", replace(cfg, recombine_p=0.0), log=lambda *_: None)
    assert all(torch.equal(weights(plain)[k], weights(never)[k]) for k in a)
    record = json.loads((runs[0] / "config.json").read_text())
    assert record["config"]["recombine"] == "world"
    assert record["config"]["recombine_scale"] == [0.3, 0.5]


def test_backgrounds_from_a_folder_or_a_dataset_of_backgrounds_alone(world, tmp_path):
    meta = ds.DatasetMeta.read(world)
    folder = tmp_path / "scenes"
    for i, name in enumerate(meta.backgrounds):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (80, 80), (i * 60, 0, 0)).save(folder / name / "a.png")
    cfg = LearnConfig(epochs=1, batch_size=8, eval_splits=(), recombine=str(folder))
    assert (learn(world, tmp_path / "runs", cfg, log=lambda *_: None) / "done").exists()
    (folder / meta.backgrounds[0] / "a.png").unlink()
    (folder / meta.backgrounds[0]).rmdir()
    with pytest.raises(DreamshiftError, match=f"have no {meta.backgrounds[0]}"):
        learn(world, tmp_path / "runs2", cfg, log=lambda *_: None)
    # a dataset's backgrounds alone (its split spurious here; `dream --mode remove` makes them
    # from photos) are one; its images with objects are not
    scenes = tmp_path / "scenes-ds"
    recipe = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=1, anti_per_group=0,
                         spurious_per_class=2)  # fmt: skip
    compose(small_config(recipe=recipe), scenes, progress=False)
    run = learn(world, tmp_path / "runs4", replace(cfg, recombine=str(scenes)), log=lambda *_: None)
    recorded = json.loads((run / "config.json").read_text())["config"]["recombine"]
    assert recorded == os.path.relpath(scenes, run)  # named from the run folder
    with pytest.raises(DreamshiftError, match="no usable images of backgrounds alone"):
        learn(world, tmp_path / "runs3", replace(cfg, recombine=str(world)), log=lambda *_: None)


def test_training_images_without_masks_are_refused_naming_the_command_that_adds_them(
    world, tmp_path
):
    old = tmp_path / "old"
    shutil.copytree(world, old)
    manifest = ds.read_manifest(old)
    columns = {n: manifest[n] for n in manifest.column_names}
    columns["mask_path"] = [None] * len(manifest)  # as written before masks
    ds.write_table_atomic(manifest.from_pydict(columns, manifest.schema), old / ds.MANIFEST)
    cfg = LearnConfig(epochs=1, batch_size=8, eval_splits=(), recombine="world")
    with pytest.raises(DreamshiftError, match=f"dreamshift compose --config {old}/dataset.json"):
        learn(old, tmp_path / "runs", cfg, log=lambda *_: None)
    assert not (tmp_path / "runs").exists()  # refused before any folder is made


class Looks(torch.nn.Module):
    """A classifier by hand: ``where`` (S, S) is the only input it reads (its saliency lies
    there); with ``shades`` it names the class whose index is the label of the background
    shade it sees most of (a pure background classifier)."""

    def __init__(self, where: torch.Tensor | None = None, shades: tuple[float, ...] = ()):
        super().__init__()
        self.where, self.shades = where, shades

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.shades:
            seen = x[:, 0].flatten(1).median(1).values
            return torch.stack([-((seen - s) ** 2) for s in self.shades], 1)
        assert self.where is not None
        read = (x * self.where).flatten(1).sum(1)
        return torch.stack([read, -read, 2 * read], 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return features


def classifier(net: torch.nn.Module, classes) -> Classifier:
    from dreamshift.data.transforms import Preprocessing

    return Classifier("by-hand", net, tuple(classes), Preprocessing.world(64))


def test_foreground_focus_and_background_robustness_by_hand(world):
    from dreamshift.audit.biases import background_robustness, foreground_focus, ratio_ci
    from dreamshift.data.loading import usable_rows
    from dreamshift.models.labels import LabelMap

    meta = ds.DatasetMeta.read(world)
    classes, names = list(meta.classes), list(meta.backgrounds)
    labels = LabelMap.build(tuple(classes), classes, None, "by-hand", "")
    rows = usable_rows(ds.read_manifest(world).to_pylist(), "test")
    # a model that reads exactly the first test object's pixels: all its saliency is there,
    # so its focus on that image is 1 / the object's share of the image
    mask = ImageTable.of_rows(world, rows[:1], classes, names).read_mask(0, (64, 64))
    net = Looks(where=torch.from_numpy(mask).float())
    focus = foreground_focus(classifier(net, classes), labels, world, rows[:1], names, 8, 50, 0)
    assert focus is not None and focus["share_on_object"] == pytest.approx(1.0)
    assert focus["summary"]["foreground_focus"] == pytest.approx(64 * 64 / mask.sum(), rel=1e-6)

    # a pure background classifier: class i <=> background i. On the images whose class is
    # their background's, it is right on their own kind of background and wrong on any other
    shades = tuple(float((10 + 40 * i) / 127.5 - 1) for i in range(len(names)))
    mine = [r for r in rows if classes.index(r["fg_class"]) == names.index(r["bg_class"])]
    by_bg = classifier(Looks(shades=shades), classes)
    robust = background_robustness(by_bg, labels, world, mine, Flat(tuple(names)), names, 4,
                                   50, 0)  # fmt: skip
    assert robust is not None and robust["n"] == len(mine) == 3
    assert (robust["acc_own"], robust["acc_foreign"]) == (1.0, 0.0)
    assert robust["summary"]["background_robustness"] == 0.0
    # on a balanced split, with each class's usual background as the objects' home: the same
    # verdict for every image, where their own backgrounds would be as foreign as any other
    usual = {c: names[i] for i, c in enumerate(classes)}
    robust = background_robustness(by_bg, labels, world, rows, Flat(tuple(names)), names, 4,
                                   50, 0, usual)  # fmt: skip
    assert robust is not None and robust["n"] == len(rows) == 9
    assert (robust["acc_own"], robust["acc_foreign"]) == (1.0, 0.0)
    own = background_robustness(by_bg, labels, world, rows, Flat(tuple(names)), names, 4, 50, 0)
    assert own is not None and own["acc_own"] == pytest.approx(1 / 3)
    # one blind to the background: the same answers on both, robustness 1
    blind = classifier(Looks(where=torch.zeros(64, 64)), classes)
    robust = background_robustness(blind, labels, world, rows, Flat(tuple(names)), names, 8, 50, 0)
    assert robust is not None and robust["summary"]["background_robustness"] == 1.0
    assert robust["acc_own"] == pytest.approx(sum(r["fg_class"] == classes[0] for r in rows)
                                              / len(rows))  # fmt: skip
    assert ratio_ci(np.ones(5), np.full(5, 2.0), 20, 0) == (0.5, 0.5)


def test_the_recombine_study_end_to_end_at_toy_size(tmp_path, capsys, monkeypatch):
    """Every method and column of the study's table, from the runs' own audit records (the
    mean over seeds and its t-interval: :func:`~dreamshift.studies.recombine.mean_interval`'s
    doctest); a relaunch redoes nothing."""
    from dreamshift.cli import main
    from dreamshift.engine.results import read_records
    from dreamshift.studies.recombine import COLUMNS, METHODS

    out = tmp_path / "study"
    monkeypatch.chdir(tmp_path)  # --out relative, as typed: the records name folders absolutely
    args = ["world", "recombine-study", "--out", "study", "--archs", "world-cnn", "--seeds",
            "0", "--train-size", "200", "--epochs", "1", "--per-group", "1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "| world-cnn | erm + recombine p 1 |" in capsys.readouterr().out
    rows = json.loads((out / "recombine-study.json").read_text())
    assert [r["method"] for r in rows] == list(METHODS)
    records = read_records(out / "audit.jsonl")
    assert len(records) == 4 * len(METHODS)  # 4 audited splits x methods
    for row in rows:
        config = {"algorithm": "erm", "recombine": "", "recombine_p": 1.0,
                  "recombine_scale": None, **METHODS[row["method"]]}  # fmt: skip
        config.pop("mi_anneal_steps", None)
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
        (anti,) = [r for r in records if r["split"] == "anti" and {
            k: v for k, v in json.loads((Path(r["model"]) / "config.json").read_text())
            ["config"].items() if k in config} == config]  # fmt: skip
        assert row["anti"] == {"mean": anti["acc_avg"], "ci": None, "n": 1}
        assert all(row[c]["n"] == 1 for c, *_ in COLUMNS)  # every column filled
    assert main(args) == 0  # a relaunch skips the finished runs and audits
    assert len(read_records(out / "audit.jsonl")) == len(records)
