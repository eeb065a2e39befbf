"""learn --finetune linear|lora|full: a pretrained classifier tuned on a dataset, its head
started from the base model's, the result a run folder that audit loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SMALL_CLASSES, small_config
from dreamshift.cli import main
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data.images import sha256_file
from dreamshift.data.loading import load_split
from dreamshift.data.transforms import Preprocessing
from dreamshift.errors import DreamshiftError
from dreamshift.learn.hparams import Hparams
from dreamshift.learn.run import LearnConfig, learn, load_run
from dreamshift.models.classifier import Classifier
from dreamshift.models.finetune import Finetune, assemble, initial_head
from dreamshift.models.labels import LabelMap
from dreamshift.models.loading import load_classifier
from dreamshift.models.zoo import IMAGENET_1K, _ClipZeroShot, imagenet_classes
from dreamshift.train.checkpoint import load_state

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    recipe = ShiftRecipe(rho=0.9, train_size=48, val_per_group=2, test_per_group=2,
                         anti_per_group=1)  # fmt: skip
    root = tmp_path_factory.mktemp("finetune") / "ds"
    compose(small_config(recipe=recipe), root, progress=False)
    return root


def _lora(**kw) -> LearnConfig:
    return LearnConfig(finetune="lora", model="world-resnet18", rank=4, alpha=8, epochs=2,
                       batch_size=16, eval_splits=("val",), hparams=Hparams(lr=1e-3),
                       **kw)  # fmt: skip


def test_lora_finetune_resumes_stores_only_what_it_trained_and_audit_loads_it(world, tmp_path):
    whole = learn(world, tmp_path / "whole", _lora(), loader_workers=0, **QUIET)

    def stop_after_first_epoch(message: str) -> None:
        if "epoch 1/2" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        learn(world, tmp_path / "resumed", _lora(), log=stop_after_first_epoch, loader_workers=0)
    resumed = learn(world, tmp_path / "resumed", _lora(), loader_workers=0, **QUIET)
    saved = load_state(whole / "checkpoint.safetensors")["state"]["model"]
    again = load_state(resumed / "checkpoint.safetensors")["state"]["model"]
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)

    # the LoRA adapters and the heads, not the frozen base (it comes back from world-resnet18)
    assert {"classifier.weight", "classifier.bias"} <= set(saved)
    assert all(k.startswith(("classifier.", "backbone.head.")) or "lora_" in k
               for k in saved if k != "step")  # fmt: skip
    base = load_classifier("world-resnet18")
    base_size = sum(p.numel() for p in base.net.parameters())
    assert sum(v.numel() for v in saved.values()) < base_size / 5
    record = json.loads((whole / "config.json").read_text())
    assert record["config"]["model"] == "world-resnet18"
    assert record["base_weights_sha256"] == base.weights_sha256

    tuned = load_classifier(str(whole))
    # the base weights are untouched: the stem convolution (LoRA-wrapped) keeps its base layer
    stem = dict(load_run(whole)[0].named_parameters())[
        "backbone.backbone.features.0.base_layer.weight"]  # fmt: skip
    assert torch.equal(stem, base.net.features[0].weight)
    # the accuracy scored after the last epoch is that of the reloaded run
    x, y, _ = load_split(world, "val", list(SMALL_CLASSES), ["grass", "water", "snow"])
    acc = float((tuned.logits(x.numpy()).argmax(1) == y.numpy()).mean())
    (result,) = [json.loads(line) for line in (tmp_path / "whole" / "results.jsonl").open()]
    assert acc == pytest.approx(result["history"][-1]["val_acc"], abs=1e-4)

    results = tmp_path / "results.jsonl"
    assert main(["audit", str(world), "--model", str(whole), "--results", str(results)]) == 0
    (audited,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert audited["weights_sha256"] == sha256_file(whole / "checkpoint.safetensors")


def test_the_head_starts_as_the_base_models_head():
    """Same classes: the base rows; an ImageNet model: the mean of the rows the label map
    gathers; zero-shot CLIP: 100 x its class-prompt embeddings."""
    base = load_classifier("world-resnet18")
    head = initial_head(base, ["dog", "bear"], 512, "")
    rows = [base.classes.index("dog"), base.classes.index("bear")]
    assert torch.equal(head.weight.detach(), base.net.head.weight.detach()[rows])
    net, _ = assemble(base, ["dog", "bear"], Finetune("linear", "world-resnet18"))
    x = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), np.uint8)
    before = load_classifier("world-resnet18").logits(x)[:, rows]
    with torch.no_grad():
        after = net.eval()(Preprocessing.world(64)(x)).numpy()
    np.testing.assert_allclose(after, before, atol=1e-4)

    class ImageNetStandIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 1000)

        def forward_features(self, x):
            return self.conv(x).mean((2, 3))

        def forward_head(self, f):
            return self.fc(f)

    torch.manual_seed(0)
    imagenet = Classifier("stand-in", ImageNetStandIn(), imagenet_classes(),
                          Preprocessing.world(16), label_space=IMAGENET_1K)  # fmt: skip
    head = initial_head(imagenet, ["bear", "cat"], 8, "")
    bears = list(LabelMap.build(imagenet_classes(), ["bear"], label_space=IMAGENET_1K).members[0])
    assert len(bears) == 4  # brown, black, ice and sloth bear
    fc = imagenet.net.fc
    assert torch.allclose(head.weight[0], fc.weight[bears].mean(0), atol=1e-5)
    assert torch.allclose(head.bias[0], fc.bias[bears].mean(), atol=1e-5)

    class Clip(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 4)

        def encode_image(self, x):
            return self.proj(x.mean((2, 3)))

    text = nn.functional.normalize(torch.randn(2, 4), dim=1)
    clip = Classifier("open_clip:stand-in", _ClipZeroShot(Clip(), text), ("cat", "dog"),
                      Preprocessing.world(16))  # fmt: skip
    head = initial_head(clip, ["cat", "dog"], 4, "")
    assert torch.allclose(head.weight, 100 * text, atol=1e-4)
    assert torch.allclose(head.bias, torch.zeros(2), atol=1e-4)
    net, targets = assemble(clip, ["cat", "dog"], Finetune("lora", "x", rank=2, alpha=4))
    assert targets == ["model.proj"]  # the one Linear its features pass through


def test_finetune_settings_and_base_weights_are_checked(world, tmp_path, capsys):
    argv = ["learn", str(world), "--out", str(tmp_path / "x"), "--epochs", "1",
            "--batch-size", "16", "--loader-workers", "0"]  # fmt: skip
    assert main([*argv, "--model", "world-resnet18"]) == 1
    assert "--finetune linear|lora|full" in capsys.readouterr().err
    assert main([*argv, "--finetune", "lora"]) == 1
    assert "needs --model" in capsys.readouterr().err
    assert main([*argv, "--finetune", "lora", "--model", "world-resnet18",
                 "--targets", "no_such_layer"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "peft cannot put LoRA there" in err and "features.0" in err
    assert "base_layer" not in err and "lora_" not in err  # the names before peft rewrote any

    out = tmp_path / "tuned"
    tune = ["--batch-size", "16", "--finetune", "linear", "--model", "world-cnn"]
    assert main(["learn", str(world), "--out", str(out), "--epochs", "1", *tune]) == 0
    assert "(linear): 771 trained parameters" in capsys.readouterr().out  # a 256 x 3 head
    (tuned,) = out.glob("erm-*")
    meta = json.loads((tuned / "config.json").read_text())
    meta["base_weights_sha256"] = "0" * 64
    (tuned / "config.json").write_text(json.dumps(meta))
    with pytest.raises(DreamshiftError, match="was tuned from world-cnn with weights sha256 000"):
        load_classifier(str(tuned))


@pytest.mark.parametrize("method", ["linear", "lora", "full"])
@pytest.mark.parametrize("algorithm", ["erm", "groupdro", "irm", "dann", "d3s"])
def test_learn_finetunes_a_pretrained_model_under_every_algorithm_and_audit_reloads_it(
    world, tmp_path, algorithm, method
):
    """learn --finetune METHOD --model world-resnet18: the run's own test accuracy is what
    `audit --model RUN` measures on the reloaded run (same predictions), the base weights stay
    as shipped unless `full` trains them, and the class head starts as the base model's."""
    from dreamshift.audit.evaluate import AuditConfig, audit

    cfg = LearnConfig(algorithm=algorithm, finetune=method, model="world-resnet18", rank=4,
                      alpha=8, epochs=1, batch_size=16, eval_splits=("test",))  # fmt: skip
    run = learn(world, tmp_path / "runs", cfg, loader_workers=0, **QUIET)
    ours = json.loads((run / "done").read_text())["test"]
    (record,) = audit(AuditConfig(models=(str(run),), split="test", bootstrap=10), world, **QUIET)
    assert record["acc_avg"] == pytest.approx(ours["acc_avg"]) and record["n"] == ours["n"]

    weights = load_state(run / "checkpoint.safetensors")["state"]["model"]
    shipped = load_classifier("world-resnet18").net.state_dict()
    stored_base = [k for k in weights if k.startswith("backbone.backbone.") and "lora_" not in k]
    assert any("lora_" in k for k in weights) == (method == "lora")
    if method != "full":  # the frozen base is not copied: it comes back from world-resnet18
        assert not stored_base
    reloaded = load_run(run)[0].backbone.backbone.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in reloaded.items() if "lora_" not in k}
    unchanged = [torch.equal(base[k], shipped[k]) for k in base if shipped[k].is_floating_point()]
    assert len(unchanged) > 10
    assert all(unchanged) == (method != "full")
