"""tiny-dream (the shipped, world-trained Stable Diffusion), its training and the oracles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dreamshift.assets import shipped
from dreamshift.cli import main
from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.models.oracles import load_oracle
from dreamshift.studies.tiny_dream import (
    TrainDreamConfig,
    prompt_words,
    train_tiny_dream,
    world_prompts,
)
from dreamshift.world.animals import CLASSES
from dreamshift.world.backgrounds import BACKGROUNDS

SHORT = TrainDreamConfig(
    train_renders=100, test_per_group=1, vae_steps=4, vae_batch=4, unet_steps=4, unet_batch=4,
    decoder_steps=4, decoder_batch=2, warmup_steps=2, checkpoint_every=2,
)  # fmt: skip


def weights(pipeline: Path) -> dict[str, bytes]:
    files = pipeline.rglob("*.safetensors")
    return {p.relative_to(pipeline).as_posix(): p.read_bytes() for p in files}


def test_a_short_training_run_resumes_to_the_same_weights(tmp_path):
    whole = train_tiny_dream(tmp_path / "whole", SHORT, workers=1, progress=False, log=print)
    assert whole is not None and (whole / "model_index.json").is_file()

    parts = tmp_path / "parts"
    parts.mkdir()
    shutil.copytree(tmp_path / "whole" / "renders", parts / "renders")  # same config: same renders
    assert train_tiny_dream(parts, SHORT, 1, False, stop_after={"vae": 2}) is None
    assert json.loads((parts / "train_config.json").read_text())["vae_steps"] == 4
    assert train_tiny_dream(parts, SHORT, 1, False, stop_after={"unet": 2}) is None
    assert train_tiny_dream(parts, SHORT, 1, False, stop_after={"decoder": 2}) is None
    resumed = train_tiny_dream(parts, SHORT, 1, False)
    assert resumed is not None
    a, b = weights(whole), weights(resumed)
    assert sorted(a) == [
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert a == b


def test_training_refuses_to_mix_configs_in_one_folder(tmp_path, capsys):
    (tmp_path / "train_config.json").write_text(json.dumps({"seed": 1}))
    assert main(["world", "train-dream", "--out", str(tmp_path), "--quiet"]) == 1
    assert "another config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("unet_stepz: 3\n")
    assert main(["world", "train-dream", "--out", str(tmp_path / "x"), "--config", str(bad)]) == 1
    assert "unet_stepz" in capsys.readouterr().err


def test_the_world_prompt_words_are_single_tokens():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(shipped("tiny-dream") / "tokenizer")
    split = [w for w in prompt_words() if len(tok(w, add_special_tokens=False).input_ids) > 1]
    # "mammal" repeats the pair "m a": the merge list was built merging one occurrence at a
    # time, CLIP merges all at once, so it ends in 3 pieces (fixing that changes the vocabulary)
    assert split == ["mammal"]
    longest = max(len(tok(p).input_ids) for p in world_prompts())
    assert longest <= tok.model_max_length
    # anything else still encodes, down to bytes, and decodes back
    ids = tok("a xylophone on the moon, 42!", add_special_tokens=False).input_ids
    assert tok.decode(ids).replace(" ", "") == "axylophoneonthemoon,42!"


def test_the_shipped_pipeline_loads_offline_with_both_sd_pipelines():
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    folder = shipped("tiny-dream")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 25 * 2**20
    for cls in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline):
        pipe = cls.from_pretrained(folder, local_files_only=True)
        assert pipe.vae.config.latent_channels == 4
        assert len(pipe.tokenizer) > 100
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    assert 1_000_000 <= unet_params <= 5_000_000


def held_out(tmp: Path, name: str, render: str = "paste", coat: str = "typical") -> Path:
    """One image of every class on every background, from silhouettes no model trained on."""
    cfg = ComposeConfig(
        placement=Placement(scale=(0.3, 0.7), max_rotation=15.0),
        recipe=ShiftRecipe(rho=0.1, train_size=0, val_per_group=0, test_per_group=1,
                           anti_per_group=0),
        seed=7, render=render, coat=coat,
    )  # fmt: skip
    out = tmp / name
    compose(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def held_out_guides(tmp_path_factory) -> Path:
    return held_out(tmp_path_factory.mktemp("held_out"), "guides")


def test_tiny_dream_is_the_default_model_of_dream(tmp_path, held_out_guides):
    out = tmp_path / "dream"
    code = main(["dream", str(held_out_guides), "--out", str(out), "--steps", "5",
                 "--batch-size", "4", "--no-progress"])  # fmt: skip
    assert code == 0
    rows = ds.read_manifest(out).to_pylist()
    assert len(rows) == 100 and {r["status"] for r in rows} == {ds.OK}
    assert {r["model_id"] for r in rows} == {"tiny-dream"}
    assert main(["regenerate", str(out), rows[0]["sample_id"], rows[-1]["sample_id"]]) == 0


def _images(root: Path) -> tuple[np.ndarray, list[dict]]:
    from PIL import Image

    rows = ds.read_manifest(root).to_pylist()
    return np.stack([np.asarray(Image.open(root / r["path"])) for r in rows]), rows


def test_the_oracles_name_held_out_photos(tmp_path):
    photos = held_out(tmp_path, "photos", render="photo")
    random_coats = held_out(tmp_path, "random", render="photo", coat="random")
    record = json.loads((shipped("oracles") / "oracles.json").read_text())
    for kind, root, col, names in (
        ("fg", photos, "fg_class", CLASSES),
        ("bg", photos, "bg_class", BACKGROUNDS),
        ("shape", random_coats, "fg_class", CLASSES),
    ):
        images, rows = _images(root)
        predicted = load_oracle(kind).predict(images)
        accuracy = np.mean([p == r[col] for p, r in zip(predicted, rows, strict=True)])
        # 100 fresh photos: within 12 points of the held-out accuracy the oracle shipped with
        assert accuracy >= record["held_out_accuracy"][kind] - 0.12, (kind, accuracy)
        assert set(predicted) <= set(names)


@pytest.mark.parametrize("size", [48, 64])
def test_an_oracle_folder_is_read_at_the_input_size_its_record_names(tmp_path, size):
    """train-oracles --config can set input_size; load_oracle must build the net for it (a
    halving stage in front from 64 on) and feed it what it was trained on, as oracles.json
    says."""
    import torch
    from safetensors.torch import save_file

    from dreamshift.data.transforms import Preprocessing
    from dreamshift.models.oracles import oracle_net

    torch.manual_seed(0)
    net = oracle_net(len(BACKGROUNDS), size).eval()
    save_file(net.state_dict(), str(tmp_path / "bg.safetensors"))
    preprocessing = Preprocessing.world(size, resize="area")
    (tmp_path / "oracles.json").write_text(json.dumps({"preprocessing": preprocessing.to_dict()}))
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    oracle = load_oracle("bg", tmp_path)
    assert oracle.preprocessing == preprocessing
    with torch.inference_mode():
        expected = net(preprocessing(images)).numpy()
    np.testing.assert_allclose(oracle.logits(images), expected, rtol=1e-5, atol=1e-6)
    assert oracle.features(images).shape == (3, 128)
    stages = sum(isinstance(m, torch.nn.Conv2d) for m in net)
    assert stages == (5 if size == 64 else 4)


def test_oracle_features_give_a_distance_that_tells_photos_from_pastes(tmp_path):
    from dreamshift.studies.evaluate_dream import dataset_distance

    photos = held_out(tmp_path, "photos", render="photo")
    pastes = held_out(tmp_path, "pastes", render="paste")
    assert dataset_distance(photos, photos).value == pytest.approx(0.0, abs=1e-6)
    d = dataset_distance(photos, pastes)
    assert (d.n_a, d.n_b) == (100, 100) and d.value > 0
    assert main(["world", "distance", str(photos), str(pastes), "--split-a", "nope"]) == 1


def test_the_wrong_class_recipe_names_the_next_class(tmp_path):
    from dreamshift.dream.prompts import load_recipe
    from dreamshift.studies.evaluate_dream import write_wrong_class_recipe, wrong_class

    recipe = load_recipe(str(write_wrong_class_recipe(tmp_path / "wrong.yaml")))
    d3s = load_recipe("d3s")
    assert wrong_class("bear") == "bird" and wrong_class("zebra") == "bear"
    assert recipe.render(0, "cat", "snow") == d3s.render(0, "cow", "snow")


def test_box_weights_mark_the_latent_cells_a_paste_box_touches():
    from dreamshift.studies.tiny_dream import box_weights

    w = box_weights(np.array([[4, 8, 9, 4]]), 3.0)  # x 4..13, y 8..12 px -> cells x 1..3, y 2
    assert w.shape == (1, 1, 16, 16)
    inside = np.zeros((16, 16), bool)
    inside[2, 1:4] = True
    assert np.array_equal(w[0, 0].numpy() == 3.0, inside)
    assert float(w.sum()) == 16 * 16 + 2 * 3


@pytest.mark.slow
def test_full_training_reproduces_the_shipped_weights_byte_for_byte(tmp_path):
    """About 90 minutes on two CPU cores (torch 2.13.0 CPU, 2 threads, as the record says).
    Float rounding depends on the torch build: under torch 2.14.1 (the CUDA build `make setup`
    installs, on the CPU) a 30-step training already gives other bytes, so this runs only in
    an environment with the record's torch (`pip install torch==2.13.0`)."""
    import torch

    expected = json.loads(shipped("tiny-dream-record.json").read_text())
    if not torch.__version__.startswith("2.13.0"):
        pytest.skip(f"the shipped weights were trained under torch 2.13.0 CPU, not "
                    f"{torch.__version__}, whose float rounding differs")  # fmt: skip
    assert torch.get_num_threads() == expected["threads"], "float rounding depends on threads"
    pipeline = train_tiny_dream(tmp_path / "train", progress=False)
    assert pipeline is not None
    shipped_dir = shipped("tiny-dream")
    files = sorted(p.relative_to(shipped_dir) for p in shipped_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(pipeline) for p in pipeline.rglob("*") if p.is_file())
    differ = [
        str(f) for f in files if (pipeline / f).read_bytes() != (shipped_dir / f).read_bytes()
    ]
    assert not differ, f"trained files differ from the shipped ones: {differ}"
    record = json.loads((tmp_path / "train" / "train_record.json").read_text())
    assert record["vae"] == expected["vae"] and record["decoder"] == expected["decoder"]


@pytest.mark.slow
def test_the_quality_report_of_the_shipped_model(tmp_path):
    """The README's table (about 25 minutes on two CPU cores). It asserts what the shipped model
    reaches, not the issue's aims it misses (bg fidelity 0.95 and shape 0.7 x the guides' at 0.8,
    txt2img, distance to photos; masked modes: fg and shape within 2 points of the guides',
    no animal in 90 % of removed images)."""
    from dreamshift.studies.evaluate_dream import evaluate_dream

    rows = {r.setting: r for r in evaluate_dream(tmp_path, progress=False)}
    guides, default, txt2img = rows["guides (paste)"], rows["img2img 0.8"], rows["txt2img"]
    assert guides.change == 0 and guides.n == 200 and guides.bg_accuracy >= 0.99
    # the animal's class is kept and the class word steers the image
    assert default.fg_accuracy >= 0.8 and default.fg_accuracy >= 0.85 * guides.fg_accuracy
    assert rows["img2img 1, wrong class in prompt"].prompted_accuracy >= 0.6
    assert default.bg_accuracy >= 0.9 and default.change > 20 and default.diversity > 20
    assert rows["img2img 0.3"].change < default.change < rows["img2img 1"].change
    assert txt2img.fg_accuracy >= 0.5
    # the autoencoder alone brings the guides closer to photos; the UNet's sampling does not
    assert rows["guides, VAE round trip only"].distance < guides.distance < default.distance
    # keeping the object: the class and scene stay, closer to photos than img2img comes
    harmonize, inpaint = rows["harmonize 0.3"], rows["inpaint 0.6, background prompt only"]
    assert harmonize.fg_accuracy >= 0.95 and harmonize.bg_accuracy >= 0.99
    assert inpaint.fg_accuracy >= 0.9 and inpaint.bg_accuracy >= 0.95
    assert max(harmonize.distance, inpaint.distance) < default.distance
    assert min(harmonize.shape_accuracy, inpaint.shape_accuracy) > default.shape_accuracy
    # removing it: the removed class is named about as often as on the true backgrounds
    removed, alone = rows["remove 1"], rows["the guides' own backgrounds, no animal"]
    assert removed.fg_accuracy <= alone.fg_accuracy + 0.05 and removed.bg_accuracy >= 0.95
    assert removed.no_animal >= 0.6 and alone.no_animal >= 0.9 and guides.no_animal <= 0.06
    assert (tmp_path / "evaluation_grid.png").is_file()


def test_quality_scores_equal_their_hand_computed_values():
    from dreamshift.studies.evaluate_dream import _score

    class Fixed:  # an oracle that always names one label
        def __init__(self, index: int, n: int) -> None:
            self.index, self.n = index, n

        def logits(self, images: np.ndarray) -> np.ndarray:
            out = np.zeros((len(images), self.n))
            out[:, self.index] = 1
            return out

        def features(self, images: np.ndarray) -> np.ndarray:
            return images.reshape(len(images), -1)[:, :2].astype(np.float64)

    def image(value: int) -> np.ndarray:
        return np.full((4, 4, 3), value, np.uint8)

    labels = [{"fg_class": "cat", "bg_class": "snow"}, {"fg_class": "dog", "bg_class": "snow"}]
    guides = {"a": (image(10), labels[0]), "b": (image(20), labels[1])}
    seed0 = {"a": (image(16), labels[0]), "b": (image(20), labels[1])}  # changes 6 and 0
    seed1 = {"a": (image(13), labels[0]), "b": (image(24), labels[1])}  # 3 and 4 from seed 0
    oracles = {
        "fg": Fixed(CLASSES.index("cat"), len(CLASSES)),
        "shape": Fixed(CLASSES.index("dog"), len(CLASSES)),
        "bg": Fixed(BACKGROUNDS.index("snow"), len(BACKGROUNDS)),
    }
    reference = oracles["fg"].features(np.stack([image(16), image(20)]))
    row = _score("x", [seed0, seed1], guides, oracles, reference)
    assert (row.n, row.fg_accuracy, row.shape_accuracy, row.bg_accuracy) == (2, 0.5, 0.5, 1.0)
    assert row.change == pytest.approx(3.0) and row.diversity == pytest.approx(3.5)
    assert row.distance == pytest.approx(0.0, abs=1e-9) and row.prompted_accuracy is None
    # a wrong prompt names the next class: cat -> cow, dog -> elephant; the oracle says cat
    wrong = _score("w", [seed0], guides, oracles, reference + 1.0, prompted=True)
    assert wrong.prompted_accuracy == 0.0
    assert wrong.distance == pytest.approx(2.0)  # both features shifted by 1: |1, 1|^2
    # a removed animal: the row has no class, the guide's is what the oracle should not name;
    # the fixed oracle's top probability is e / (e + 9) = 0.232 for every image
    removed = {k: (img, {"fg_class": None, "bg_class": "snow"}) for k, (img, _) in seed0.items()}
    gone = _score("r", [removed], guides, oracles, reference, present=0.3)
    assert (gone.fg_accuracy, gone.bg_accuracy, gone.no_animal) == (0.5, 1.0, 1.0)
    assert _score("r", [removed], guides, oracles, reference, present=0.2).no_animal == 0.0


def test_fidelity_of_a_dataset_counts_what_the_oracles_name(tmp_path, capsys):
    """Held-out world photos: the bg oracle (100 % on photos) names every scene."""

    cfg = ComposeConfig(
        classes=("cat", "zebra"),
        background_names=("grass", "snow"),
        render="photo",
        seed=11,
        recipe=ShiftRecipe(rho=0.5, train_size=0, val_per_group=0, test_per_group=3,
                           anti_per_group=0),
    )  # fmt: skip
    compose(cfg, tmp_path / "photos", progress=False)
    assert main(["world", "fidelity", str(tmp_path / "photos"), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "bg oracle 100.0%" in out and "of 12 images" in out
