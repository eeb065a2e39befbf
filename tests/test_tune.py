"""dreamshift tune: LoRA and DreamBooth runs on a tiny random Stable Diffusion, and their use
by dream."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dreamshift.assets import shipped
from dreamshift.cli import main
from dreamshift.data import dataset as ds
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream, regenerate
from dreamshift.errors import DreamshiftError
from dreamshift.models.diffusion import LORA_FILE, quiet_libraries
from dreamshift.models.loading import classifier_fingerprint
from dreamshift.tune import run as tune_run
from dreamshift.tune.config import TuneConfig
from dreamshift.tune.run import MODEL_DIR, select_instances, tune

QUIET = {"progress": False, "log": lambda line: None}


def fast(model: Path, **fields) -> TuneConfig:
    base = {"model": str(model), "steps": 4, "batch_size": 2, "rank": 4, "checkpoint_every": 2}
    return TuneConfig(**(base | fields))


def unet_output(pipe, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    text = torch.randn(1, 5, pipe.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return pipe.unet(x, torch.tensor([500]), text).sample


def load_pipe(model: Path):
    quiet_libraries()
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        model, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )


def test_a_lora_run_loads_into_diffusers_at_its_own_alpha(tmp_path, tiny_sd, guides):
    """The file is diffusers' own: ``pipe.load_lora_weights(run)`` takes it, scale 0 is the
    base model exactly, and alpha (here 2x the rank) is kept, so scale 1 is the trained one."""
    cfg = fast(tiny_sd, alpha=8, train_text_encoder=True, lr=1e-2)
    folder = tune(guides, tmp_path / "runs", cfg, **QUIET)
    assert folder.name.startswith("lora-") and (folder / "done").exists()
    keys = load_file(folder / LORA_FILE).keys()
    assert any(k.startswith("unet.") for k in keys)
    assert any(k.startswith("text_encoder.") for k in keys)

    base = load_pipe(tiny_sd)
    reference = unet_output(base)
    pipe = load_pipe(tiny_sd)
    pipe.load_lora_weights(str(folder), adapter_name="tuned")
    assert pipe.unet.peft_config["tuned"].lora_alpha == 8
    pipe.set_adapters(["tuned"], adapter_weights=[0.0])
    assert torch.equal(unet_output(pipe), reference)
    pipe.set_adapters(["tuned"], adapter_weights=[1.0])
    assert not torch.allclose(unet_output(pipe), reference, atol=1e-4)

    record = json.loads((tmp_path / "runs" / "results.jsonl").read_text().splitlines()[0])
    assert record["run"] == folder.name and record["losses"]["all"]["steps"] == 4
    assert record["instances"] and record["model_sha256"]


def test_a_resumed_run_ends_with_the_same_weights(tmp_path, tiny_sd, guides, monkeypatch):
    cfg = fast(tiny_sd, lr=1e-2)
    whole = tune(guides, tmp_path / "whole", cfg, **QUIET)

    real = tune_run.fit_steps
    steps_run: list[int] = []

    def counted(name, total, step_fn, *args, **kwargs):
        def step(s, g):
            steps_run.append(s)
            return step_fn(s, g)

        return real(name, total, step, *args, **kwargs)

    def interrupted(*args, **kwargs):
        counted(*args, **kwargs, stop_after=2)  # writes the step-2 checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_run, "fit_steps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(guides, tmp_path / "split", cfg, **QUIET)
    monkeypatch.setattr(tune_run, "fit_steps", counted)
    resumed = tune(guides, tmp_path / "split", cfg, **QUIET)
    assert steps_run == [0, 1, 2, 3]  # the relaunch went on from the checkpoint
    assert resumed.name == whole.name
    a, b = load_file(whole / LORA_FILE), load_file(resumed / LORA_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(whole / LORA_FILE)
    assert any(v.abs().sum() > 0 for k, v in base.items() if "lora.up" in k or "lora_B" in k)


def test_instances_are_chosen_by_split_class_and_shots(guides):
    cfg = TuneConfig(classes=("cat",), shots=2, seed=3)
    rows = select_instances(guides, cfg)
    assert len(rows) == 2 and {r["fg_class"] for r in rows} == {"cat"}
    assert {r["split"] for r in rows} == {"train"}
    assert select_instances(guides, cfg) == rows  # the same draw for the same seed
    everything = select_instances(guides, TuneConfig(split="test"))
    assert len(everything) == 4


def test_bad_choices_are_refused_with_what_to_do(tmp_path, tiny_sd, guides):
    with pytest.raises(DreamshiftError, match=r"no images of class\(es\) \['zebra'\]"):
        tune(guides, tmp_path, fast(tiny_sd, classes=("zebra",)), **QUIET)
    with pytest.raises(DreamshiftError, match="it has \\['test', 'train'\\]"):
        tune(guides, tmp_path, fast(tiny_sd, split="val"), **QUIET)
    splits = fast(tiny_sd, method="dreambooth", identifier="zzqx")
    with pytest.raises(DreamshiftError, match="splits identifier 'zzqx'"):
        tune(guides, tmp_path, splits, **QUIET)
    with pytest.raises(DreamshiftError, match="placeholders are"):
        fast(tiny_sd, instance_prompt="a ${klass}").check()
    with pytest.raises(DreamshiftError, match=r"--prior .* has no class images of \['dog'\]"):
        tune(guides, tmp_path, fast(tiny_sd, prior=str(_only_cats(guides, tmp_path))), **QUIET)


def paste_copy(guides: Path, out: Path) -> Path:
    """A dataset directory of the guides' copies (``dream --mode paste``), as a prior set."""
    assert main(["dream", str(guides), "--out", str(out), "--mode", "paste", "--no-progress"]) == 0
    return out


def _only_cats(guides: Path, tmp_path: Path) -> Path:
    out = paste_copy(guides, tmp_path / "cats")
    rows = [r.replace(status=ds.FAILED) if r.fg_class == "dog" else r for r in ds.read_rows(out)]
    ds.write_table_atomic(ds.manifest_table(rows), ds.DatasetLayout(out).manifest_path)
    return out


def test_prior_preservation_adds_the_class_images_loss(tmp_path, tiny_sd, guides):
    prior = paste_copy(guides, tmp_path / "prior")
    unweighted = fast(tiny_sd, prior=str(prior), prior_images=2, prior_weight=0.0, lr=1e-2)
    plain = tune(guides, tmp_path / "runs", unweighted, **QUIET)  # the same draws, no prior loss
    cfg = fast(tiny_sd, prior=str(prior), prior_images=2, prior_weight=1.0, lr=1e-2)
    with_prior = tune(guides, tmp_path / "runs", cfg, **QUIET)
    assert tune(guides, tmp_path / "runs", replace(cfg, snr_gamma=5.0), **QUIET).is_dir()
    record = json.loads((with_prior / "config.json").read_text())
    assert len(record["prior_instances"]) == 4  # 2 per class
    a, b = load_file(plain / LORA_FILE), load_file(with_prior / LORA_FILE)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_dreambooth_writes_a_model_folder_dream_uses(tmp_path, tiny_sd, guides):
    cfg = fast(tiny_sd, method="dreambooth", steps=2, identifier="q", lr=1e-3)
    folder = tune(guides, tmp_path / "runs", cfg, **QUIET)
    model = folder / MODEL_DIR
    assert (model / "model_index.json").is_file()
    tuned, base = load_pipe(model), load_pipe(tiny_sd)
    assert not torch.equal(unet_output(tuned), unet_output(base))
    out = tmp_path / "dreamed"
    argv = ["dream", str(guides), "--out", str(out), "--model", str(folder), "--splits", "test"]
    assert main([*argv, "--steps", "2", "--no-progress"]) == 0
    made = ds.read_manifest(out).to_pylist()
    assert all(r["status"] == "ok" for r in made)
    assert {r["model_id"] for r in made} == {str(folder)}  # the run folder names its model


def test_dream_applies_adapters_records_them_and_regenerates(tmp_path, tiny_sd, guides):
    one = tune(guides, tmp_path / "runs", fast(tiny_sd, lr=1e-2), **QUIET)
    each = tune(guides, tmp_path / "runs", fast(tiny_sd, lr=1e-2, per_class=True), **QUIET)
    assert sorted(p.name for p in (each / "adapters").iterdir()) == ["cat", "dog"]

    def run(name: str, *adapters: str):
        cfg = DreamConfig(source=str(guides), model=str(tiny_sd), steps=2, strength=0.5,
                          splits=("test",), adapters=adapters)  # fmt: skip
        dream(cfg, tmp_path / name, progress=False)
        return ds.read_manifest(tmp_path / name).to_pylist()

    plain = run("plain")
    half = run("half", f"{one}:0.5")
    assert [r["adapters"] for r in plain] == [None] * 4
    applied = json.loads(half[0]["adapters"])
    assert applied == [{"path": str(one), "scale": 0.5, "sha256": applied[0]["sha256"]}]
    assert len(applied[0]["sha256"]) == 64
    assert {r["sample_id"] for r in plain}.isdisjoint(r["sample_id"] for r in half)

    per_class = run("per-class", str(each))
    for r in per_class:
        (entry,) = json.loads(r["adapters"])
        expected = tune_run.sha256_file(each / "adapters" / r["fg_class"] / LORA_FILE)
        assert entry["sha256"] == expected
    for name in ("half", "per-class"):
        assert all(r.match for r in regenerate(tmp_path / name))


def test_an_adapter_for_another_model_is_refused(tmp_path, tiny_sd, guides):
    folder = tune(guides, tmp_path / "runs", fast(tiny_sd), **QUIET)
    cfg = DreamConfig(source=str(guides), model="tiny-dream", steps=2, strength=0.5,
                      splits=("test",), adapters=(str(folder),))  # fmt: skip
    with pytest.raises(DreamshiftError, match="cannot load the LoRA"):
        dream(cfg, tmp_path / "out", progress=False)
    (tmp_path / "unfinished").mkdir()
    record = {"model_id": str(tiny_sd), "instances": []}  # a tune run's record, no done marker
    (tmp_path / "unfinished" / "config.json").write_text(json.dumps(record))
    with pytest.raises(DreamshiftError, match="unfinished `dreamshift tune` run"):
        unfinished = (str(tmp_path / "unfinished"),)
        cfg = DreamConfig(source=str(guides), model=str(tiny_sd), adapters=unfinished)
        dream(cfg, tmp_path / "o3", progress=False)
    cats = tune(guides, tmp_path / "runs", fast(tiny_sd, classes=("cat",), per_class=True), **QUIET)
    with pytest.raises(DreamshiftError, match=r"has no class adapter for \['dog'\]"):
        cfg = DreamConfig(source=str(guides), model=str(tiny_sd), adapters=(str(cats),))
        dream(cfg, tmp_path / "o4", progress=False)
    with pytest.raises(DreamshiftError, match="no LoRA at"):
        DreamConfig(source=str(guides), adapters=(str(tmp_path),)).check() or dream(
            DreamConfig(source=str(guides), model=str(tiny_sd), adapters=(str(tmp_path),)),
            tmp_path / "out2",
            progress=False,
        )


def test_the_cli_runs_tune_and_skips_a_finished_run(tmp_path, tiny_sd, guides, capsys):
    argv = ["tune", str(guides), "--out", str(tmp_path), "--model", str(tiny_sd), "--steps",
            "2", "--batch-size", "2", "--rank", "4", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "is done: skipped" in out and out.strip().splitlines()[-1] == first
    assert main([*argv[:-1], "--classes", "zebra"]) == 1


def test_the_spurious_feature_loss_equals_its_hand_computed_value():
    from dreamshift.tune.sfsl import spurious_similarity_loss

    ref, pred = torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 1.0], [1.0, 3.0]])
    w = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    # image 1: (1, 0) vs (0, 1): cos 0; image 2: (2, -2) vs (1, -3): cos 8 / (sqrt(8) sqrt(10))
    expected = ((1 - 0.0) + (1 - 8 / (8**0.5 * 10**0.5))) / 2
    assert spurious_similarity_loss(ref, pred, w).item() == pytest.approx(expected, abs=1e-6)


def test_the_class_weights_are_the_heads_own_rows():
    from dreamshift.tune.sfsl import SpuriousFeatures

    spurious = SpuriousFeatures("world-cnn", ["cat", "dog"], "cpu")
    clf = spurious.classifier
    dim = spurious.head.shape[1]
    with torch.no_grad():
        zero = clf.forward_head(torch.zeros(1, dim))[0]
        unit = clf.forward_head(torch.eye(dim))  # row j: the logits of feature j alone
    assert torch.allclose(spurious.head, (unit - zero).T, atol=1e-5)
    assert torch.equal(spurious.weights(["dog", "cat"])[0], spurious.head[clf.classes.index("dog")])
    with pytest.raises(DreamshiftError, match=r"has no output for class\(es\) \['unicorn'\]"):
        SpuriousFeatures("world-cnn", ["unicorn"], "cpu")


def test_sfsl_changes_what_the_generator_learns(tmp_path, tiny_sd, guides):
    plain = tune(guides, tmp_path / "runs", fast(tiny_sd, lr=1e-2), **QUIET)
    cfg = fast(tiny_sd, lr=1e-2, sfsl="world-cnn", kappa=1.0)
    pulled = tune(guides, tmp_path / "runs", cfg, **QUIET)
    a, b = load_file(plain / LORA_FILE), load_file(pulled / LORA_FILE)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    losses = json.loads((pulled / "summary.json").read_text())
    assert losses["loss_first"] > 0
    with pytest.raises(DreamshiftError, match="give both"):
        fast(tiny_sd, sfsl="world-cnn").check()


def test_spurious_images_take_the_class_whose_usual_background_they_show(tmp_path):
    from dreamshift.compose.config import ComposeConfig, ShiftRecipe
    from dreamshift.compose.runner import compose

    recipe = ShiftRecipe(rho=1.0, train_size=4, val_per_group=0, test_per_group=0,
                         anti_per_group=0, spurious_per_class=2)  # fmt: skip
    cfg = ComposeConfig(classes=("cat", "dog"), background_names=("grass", "snow"), recipe=recipe)
    compose(cfg, tmp_path / "ds", progress=False)
    usual = ds.DatasetMeta.read(tmp_path / "ds").to_dict()["assignment"]
    rows = select_instances(tmp_path / "ds", TuneConfig(split="spurious", classes=("dog",)))
    assert len(rows) == 2 and all(r["bg_class"] == usual["dog"] for r in rows)
    assert {r["fg_class"] for r in rows} == {"dog"}


def test_a_per_class_run_applies_exactly_its_class_adapter(tmp_path, tiny_sd, guides):
    """A cat request through a per-class run makes the very pixels of the cat adapter alone,
    and other pixels than the dog adapter alone."""
    from dreamshift.models.diffusion import (
        Dreamer,
        Request,
        resolve_adapter,
        resolve_runtime,
        resolve_scheduler,
    )

    each = tune(guides, tmp_path / "runs", fast(tiny_sd, lr=5e-2, per_class=True), **QUIET)
    scheduler = resolve_scheduler(tiny_sd, "model")
    runtime = resolve_runtime("cpu", threads=1)

    def make(adapter: Path, fg_class: str):
        adapters = [resolve_adapter(str(adapter))]
        dreamer = Dreamer(tiny_sd, "txt2img", *scheduler, runtime, adapters=adapters)
        return dreamer.generate([Request("a photo of a cat", "", 3, fg_class=fg_class)],
                                2, 1.0, 1.0, 64, 64)[0]  # fmt: skip

    through_run = make(each, "cat")
    assert (through_run == make(each / "adapters" / "cat" / LORA_FILE, "")).all()
    assert not (through_run == make(each / "adapters" / "dog" / LORA_FILE, "")).all()


def test_runs_given_to_the_wrong_option_say_which_one_to_use(tmp_path, tiny_sd, guides):
    from dreamshift.models.diffusion import locate_model, resolve_adapter

    lora = tune(guides, tmp_path / "runs", fast(tiny_sd), **QUIET)
    with pytest.raises(
        DreamshiftError, match=f"pass it as --adapter .* base model \\({re.escape(str(tiny_sd))}"
    ):
        locate_model(str(lora))
    booth = tune(
        guides,
        tmp_path / "runs",
        fast(tiny_sd, method="dreambooth", steps=1, identifier="q"),
        **QUIET,
    )
    with pytest.raises(DreamshiftError, match=r"is a DreamBooth run .* pass it as --model"):
        resolve_adapter(str(booth))
    assert locate_model(str(booth)).path == (booth / MODEL_DIR).resolve()
    from dreamshift.folders import KIND_FILE, folder_kind
    from dreamshift.models.loading import load_classifier

    assert folder_kind(lora) == folder_kind(booth) == "tune-run"
    with pytest.raises(DreamshiftError, match=r"is a `dreamshift tune` run .* not a classifier"):
        load_classifier(str(lora))
    (booth / "done").unlink()  # stopped after its model folder was written, before the end
    with pytest.raises(DreamshiftError, match="unfinished `dreamshift tune` run"):
        locate_model(str(booth))
    (booth / KIND_FILE).unlink()  # a run written before folders named their kind
    with pytest.raises(DreamshiftError, match="unfinished `dreamshift tune` run"):
        locate_model(str(booth))
    if not torch.cuda.is_available():
        with pytest.raises(DreamshiftError, match="--device cuda: torch sees no CUDA"):
            tune(guides, tmp_path / "gpu", fast(tiny_sd, device="cuda"), **QUIET)


def test_a_run_is_named_by_its_weights_not_by_how_it_was_saved(tmp_path, tiny_sd):
    """checkpoint_every and gradient checkpointing leave the folder name alone; the SFSL
    classifier counts by its weights, so retraining it in place makes a new run."""
    from dreamshift.tune.run import run_folder

    def name(**fields):
        return run_folder(tmp_path, fast(tiny_sd, **fields), "m", ["d"]).name

    assert name() == name(checkpoint_every=1, gradient_checkpointing=True) != name(lr=1e-3)
    clf = tmp_path / "clf"
    shutil.copytree(shipped("classifiers") / "world-cnn", clf)
    before = name(sfsl=str(clf), kappa=1.0)
    assert before == name(sfsl="world-cnn", kappa=1.0) != name(sfsl="world-resnet18", kappa=1.0)
    (clf / "probes.jsonl").write_text("{}\n")  # a file that is not the weights: same run
    assert name(sfsl=str(clf), kappa=1.0) == before
    weights = load_file(clf / "model.safetensors")
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in weights.items()},
              clf / "model.safetensors")  # fmt: skip
    assert name(sfsl=str(clf), kappa=1.0) != before  # retrained in place: a new run
    assert classifier_fingerprint("timm:resnet18") == "timm:resnet18"  # a zoo name: by name


def test_called_by_keeps_the_images_the_classifier_calls_their_class(tmp_path):
    """Spurious images as Maung Maung et al. (2024) take them: background-only images that a
    classifier calls class k; each kept row checked against the classifier's own prediction."""
    import numpy as np
    from PIL import Image

    from dreamshift.compose.config import ComposeConfig, ShiftRecipe
    from dreamshift.compose.runner import compose
    from dreamshift.models.loading import load_classifier

    recipe = ShiftRecipe(rho=1.0, train_size=4, val_per_group=0, test_per_group=0,
                         anti_per_group=0, spurious_per_class=3)  # fmt: skip
    compose(ComposeConfig(recipe=recipe), tmp_path / "ds", progress=False)  # the world's classes
    every = select_instances(tmp_path / "ds", TuneConfig(split="spurious"))
    kept = select_instances(
        tmp_path / "ds", TuneConfig(split="spurious", called_by=("world-cnn",), device="cpu")
    )
    clf = load_classifier("world-cnn")
    images = np.stack([np.asarray(Image.open(tmp_path / "ds" / r["path"])) for r in every])
    called = [clf.classes[k] for k in clf.logits(images).argmax(1)]
    expected = [r for r, c in zip(every, called, strict=True) if c == r["fg_class"]]
    assert kept == expected and 0 < len(kept) < len(every)  # it keeps some, not all
    lost = sorted({r["fg_class"] for r in every} - {r["fg_class"] for r in kept})
    assert lost  # classes none of whose images it calls their class: asked for, refused
    with pytest.raises(DreamshiftError, match=rf"no image of class\(es\) \['{lost[0]}'\]"):
        select_instances(
            tmp_path / "ds",
            TuneConfig(split="spurious", classes=(lost[0],), called_by=("world-cnn",)),
        )
    (tmp_path / "folder" / "unicorn").mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "folder" / "unicorn" / "a.png")
    with pytest.raises(DreamshiftError, match=r"--called-by world-cnn has no output .*unicorn"):
        select_instances(tmp_path / "folder", TuneConfig(called_by=("world-cnn",)))


def test_the_spurious_feature_study_scores_equal_their_hand_computed_values(tmp_path):
    """Spurious accuracy (Maung Maung et al. 2024): per class, the share of its images a
    classifier calls k, both classifiers at once, then the mean over classes."""
    import numpy as np
    from PIL import Image

    from dreamshift.compose.config import ComposeConfig, ShiftRecipe
    from dreamshift.compose.runner import compose
    from dreamshift.models.loading import load_classifier
    from dreamshift.studies.spurious_features import CLASSIFIERS, _Scorer

    recipe = ShiftRecipe(rho=1.0, train_size=4, val_per_group=0, test_per_group=0,
                         anti_per_group=0, spurious_per_class=6)  # fmt: skip
    compose(ComposeConfig(recipe=recipe, seed=31), tmp_path / "ds", progress=False)
    usual = ds.DatasetMeta.read(tmp_path / "ds").to_dict()["assignment"]
    rows = select_instances(tmp_path / "ds", TuneConfig(split="spurious"))
    images = {
        c: np.stack([np.asarray(Image.open(tmp_path / "ds" / r["path"]))
                     for r in rows if r["fg_class"] == c])
        for c in ("bird", "zebra", "bear")
    }  # fmt: skip
    row = _Scorer(images, usual).score("spurious", images)
    called = {
        spec: {c: [load_classifier(spec).classes[k] == c
                   for k in load_classifier(spec).logits(x).argmax(1)]
               for c, x in images.items()}
        for spec in CLASSIFIERS
    }  # fmt: skip
    for spec in CLASSIFIERS:
        expected = np.mean([np.mean(v) for v in called[spec].values()])
        assert row.spurious_accuracy[spec] == pytest.approx(expected)
    both = np.mean([
        np.mean([a and b for a, b in zip(*(called[s][c] for s in CLASSIFIERS), strict=True)])
        for c in images
    ])  # fmt: skip
    assert row.spurious_accuracy["both"] == pytest.approx(both)
    assert row.per_class["bird"]["n"] == 6 and row.n == 18
    assert row.bg_accuracy > 0.9  # the oracle sees each class's usual background
    assert row.distance == pytest.approx(0.0, abs=1e-3)  # the references against themselves


@pytest.mark.slow
def test_the_spurious_feature_study_runs_and_resumes_to_the_same_table(tmp_path):
    from dreamshift.studies.spurious_features import StudyConfig, spurious_feature_study

    cfg = StudyConfig(classes=("zebra", "bird"), per_class=4, prior_images=4, steps=4,
                      kappas=(1.0,), dream_steps=2)  # fmt: skip
    lines: list[str] = []
    first = spurious_feature_study(tmp_path, cfg, progress=False, log=lines.append)
    assert [r.setting for r in first][1:] == [
        "base, class prompt", "DreamBooth (UNet)", "DreamBooth + text encoder",
        "+ SFSL (world-cnn), kappa 1",
    ]  # fmt: skip
    assert all(r.classes == 2 and r.n == 8 for r in first[1:])
    study = (tmp_path / "study.json").read_text()
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 6  # 3 variants x 2 classes, each its own DreamBooth run
    lines.clear()
    assert spurious_feature_study(tmp_path, cfg, progress=False, log=lines.append) == first
    assert sum("is done: skipped" in line for line in lines) == 6  # nothing trained again
    assert (tmp_path / "study.json").read_text() == study
