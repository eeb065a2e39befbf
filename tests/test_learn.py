"""Learning algorithms and mutual-information estimators on tiny synthetic cases."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dreamshift.data import dataset as ds
from dreamshift.learn.algorithms import ALGORITHMS, Batch
from dreamshift.learn.hparams import Hparams
from dreamshift.learn.mine import ESTIMATORS, MINE, estimate_mi


def tiny_batch(n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    bg = (torch.arange(n) // 3) % 2
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.2 - 0.1
    x[:, 0] += y.view(n, 1, 1).float() * 0.3  # the class shows in the red channel
    return Batch(x, y, bg)


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_updates_predicts_and_its_loss_goes_down(name):
    torch.manual_seed(0)
    algo = ALGORITHMS.get(name)(
        "world-cnn", num_classes=3, num_backgrounds=2, hp=Hparams(lr=3e-3, irm_anneal_steps=1000)
    )
    batch = tiny_batch()
    first = algo.update(batch)
    for _ in range(25):
        last = algo.update(batch)
    assert set(first) == set(last) and "loss" in last
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    with torch.no_grad():  # batch statistics: 26 steps are too few for BatchNorm's running ones
        logits = algo.predict(batch.x)
        feats = algo.features(batch.x)
    assert (logits.argmax(1) == batch.y).float().mean() > 0.9
    algo.eval()
    with torch.no_grad():
        assert algo.predict(batch.x).shape == (16, 3)
    if name == "d3s":
        assert set(feats) == {"fg", "bg"}
        assert feats["fg"].shape[1] + feats["bg"].shape[1] == algo.num_features


def test_d3s_penalty_is_off_until_its_anneal_step():
    """Before ``mi_anneal_steps`` a d3s update equals one with no penalty; from it on, the
    penalty moves the weights (the optimiser reset at that step is common to both runs)."""

    def trained(steps: int, **hp) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
        torch.manual_seed(0)
        hp = {"mi_estimator": "classifier", "mi_steps": 20, "mi_lr": 1e-2, **hp}
        algo = ALGORITHMS.get("d3s")(
            "world-cnn", num_classes=3, num_backgrounds=2, hp=Hparams(**hp)
        )
        logs = [algo.update(tiny_batch()) for _ in range(steps)]
        return {k: v.clone() for k, v in algo.backbone.state_dict().items()}, logs

    annealed, _ = trained(3, mi_anneal_steps=3)
    unpenalised, _ = trained(3, mi_weight=0.0)
    assert all(torch.equal(v, unpenalised[k]) for k, v in annealed.items())
    annealed, logs = trained(5, mi_anneal_steps=3)
    switched_off, _ = trained(5, mi_anneal_steps=3, mi_weight=0.0)
    assert max(logs[3]["mi_fg_bg"], logs[3]["mi_bg_fg"]) > 0  # a penalty to apply
    assert not all(torch.equal(v, switched_off[k]) for k, v in annealed.items())


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_estimators_tell_dependent_from_independent_variables(estimator):
    g = torch.Generator().manual_seed(0)
    n, k = 4000, 4
    y = torch.randint(0, k, (n,), generator=g)
    noise = torch.randn(n, 4, generator=g)
    dependent = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.3 * noise
    independent = torch.randn(n, 4, generator=g)
    torch.manual_seed(0)
    dep = estimate_mi(ESTIMATORS[estimator](4, k), dependent, y, steps=400)
    torch.manual_seed(0)
    ind = estimate_mi(ESTIMATORS[estimator](4, k), independent, y, steps=400)
    if estimator in ("mine", "classifier"):  # bounds in nats: I = log 4 = 1.386 if dependent
        assert 0.9 < dep <= 1.45 and abs(ind) < 0.1, (dep, ind)
    else:  # a critic's score gap: large for dependent, near 0 for independent
        assert dep > 1.0 and abs(ind) < 0.3 * dep, (dep, ind)


def test_unknown_algorithm_lists_the_choices():
    from dreamshift.errors import DreamshiftError

    with pytest.raises(DreamshiftError, match="d3s, dann, erm, groupdro, irm"):
        ALGORITHMS.get("vrex")
    assert isinstance(MINE(2, 2), torch.nn.Module)


def test_probe_matrix_recovers_known_structure():
    import numpy as np

    from dreamshift.learn.probe import probe_matrix

    rng = np.random.default_rng(0)

    def data(n):
        y, b = rng.integers(0, 4, n), rng.integers(0, 3, n)
        fg = np.eye(4)[y] + 0.3 * rng.normal(size=(n, 4))  # carries the class only
        bg = np.eye(3)[b] + 0.3 * rng.normal(size=(n, 3))  # carries the background only
        return {"fg": fg, "bg": bg}, {"class": y, "background": b}

    m = probe_matrix(*data(600), *data(400), num_labels={"class": 4, "background": 3})
    assert m["fg"]["class"] > 0.95 and m["bg"]["background"] > 0.95
    assert abs(m["fg"]["background"] - m["chance"]["background"]) < 0.1
    assert abs(m["bg"]["class"] - m["chance"]["class"]) < 0.1
    assert 0.25 <= m["chance"]["class"] < 0.35  # most frequent of 4 balanced labels


def whole_and_resumed(world, tmp_path, cfg):
    """The run folders of ``cfg`` trained in one go (in ``a``) and stopped after its first epoch
    of two, then relaunched (in ``b``)."""
    from dreamshift.learn.run import learn

    whole = learn(world, tmp_path / "a", cfg, log=lambda *_: None)

    def stop_after_first_epoch(message):
        if "epoch 1/2" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        learn(world, tmp_path / "b", cfg, log=stop_after_first_epoch)
    return whole, learn(world, tmp_path / "b", cfg, log=lambda *_: None)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from conftest import small_config
    from dreamshift.compose.runner import compose

    root = tmp_path_factory.mktemp("learn") / "ds"
    compose(small_config(), root, progress=False)
    return root


def test_learn_runs_resume_skip_when_done_and_probe(world, tmp_path, capsys):
    from dreamshift.cli import main
    from dreamshift.errors import DreamshiftError
    from dreamshift.learn.run import LearnConfig, learn, probe
    from dreamshift.report.html import write_report
    from dreamshift.report.tables import read_probes
    from dreamshift.train.checkpoint import load_state

    cfg = LearnConfig(algorithm="d3s", epochs=2, batch_size=8, eval_splits=("test", "anti"))
    whole, resumed = whole_and_resumed(world, tmp_path, cfg)
    assert whole.name == resumed.name  # the folder is named by the config, not the place
    a = load_state(whole / "checkpoint.safetensors")["state"]["model"]
    b = load_state(resumed / "checkpoint.safetensors")["state"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    logs = []
    assert learn(world, tmp_path / "a", cfg, log=logs.append) == whole
    assert logs == [f"{whole} is done: skipped"]
    (record,) = [
        json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()
    ]
    assert set(record["splits"]) == {"test", "anti"} and record["splits"]["test"]["n"] == 18
    assert 0 <= record["splits"]["test"]["acc_wg"] <= record["splits"]["test"]["acc_avg"]

    m = probe(world, whole)
    assert set(m) == {"fg", "bg", "chance"} and set(m["fg"]) == {"class", "background"}
    assert main(["probe", str(whole), str(world)]) == 0
    assert "-> background" in capsys.readouterr().out
    probes = read_probes(whole)
    assert len(probes) == 2 and probes[0]["matrix"] == m and probes[0]["test_split"] == "test"
    # probed on the very data LEACE was fitted on: the erased label is read no better than by a
    # constant (the probe is then near-constant, and its ties put it within 3 of the 30
    # training images of chance; unerased it reads 100 %), the other as well as from the raw
    # block
    raw = probe(world, whole, test_split="train")
    erased = probe(world, whole, test_split="train", erase=True)
    assert list(erased) == ["fg, background erased", "bg, class erased", "chance"]
    chance = erased["chance"]
    assert erased["fg, background erased"]["background"] <= chance["background"] + 0.1
    assert erased["bg, class erased"]["class"] <= chance["class"] + 0.1
    assert erased["fg, background erased"]["class"] >= raw["fg"]["class"] - 0.05
    assert erased["bg, class erased"]["background"] >= raw["bg"]["background"] - 0.05
    erm = learn(world, tmp_path / "erm", replace(cfg, algorithm="erm"), log=lambda *_: None)
    with pytest.raises(DreamshiftError, match="needs a run with fg and bg"):
        probe(world, erm, erase=True)

    page = write_report([tmp_path / "a" / "results.jsonl"], tmp_path / "report.html").read_text()
    assert "Learn runs" in page and whole.name in page
    row = '<td class="txt">d3s</td><td class="txt">ds (paste)</td><td class="num">0.8</td>'
    assert row in page  # the task table's row
    assert "→ background" in page and '<td class="txt">chance</td>' in page  # the probe matrix
    tables = (tmp_path / "report_files" / "tables.md").read_text()
    assert "| d3s | ds (paste) | 0.8 | 2 | 0 |" in tables


@pytest.mark.parametrize("algorithm", ["irm", "d3s"])
def test_a_run_resumed_after_its_optimizer_restarted_matches_an_uninterrupted_one(
    world, tmp_path, algorithm
):
    """IRM and d3s restart their optimizer when the penalty comes in (step 2 of epoch 1 here):
    the checkpoint must hold the new optimizer, or the resumed run drifts away."""
    from dreamshift.learn.run import LearnConfig
    from dreamshift.train.checkpoint import load_state

    hp = Hparams(irm_anneal_steps=2, mi_anneal_steps=2)
    cfg = LearnConfig(algorithm=algorithm, epochs=2, batch_size=8, eval_splits=(), hparams=hp)
    whole, resumed = whole_and_resumed(world, tmp_path, cfg)
    a = load_state(whole / "checkpoint.safetensors")["state"]
    b = load_state(resumed / "checkpoint.safetensors")["state"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_lr_schedules():
    from dreamshift.train.schedules import lr_factor

    assert [lr_factor("constant", s, 100) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    cosine = [lr_factor("cosine", s, 100) for s in range(100)]
    assert cosine[0] == pytest.approx(0.2) and cosine[4] == 1.0  # 5 warm-up steps
    assert cosine[52] == pytest.approx(0.5, abs=0.02) and cosine[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(cosine[4:]))
    for total in (7, 100):  # onecycle: torch's OneCycleLR, step by step
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=total)
        for step in range(total):
            assert 2e-3 * lr_factor("onecycle", step, total) == pytest.approx(
                opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15
            )
            opt.step()
            sched.step()


def test_a_head_on_frozen_features_leaves_the_source_untouched(world, tmp_path):
    from dreamshift.errors import DreamshiftError
    from dreamshift.learn.run import LearnConfig, learn, load_run

    d3s = LearnConfig(algorithm="d3s", epochs=1, batch_size=8, eval_splits=("test",))
    source = learn(world, tmp_path, d3s, log=lambda *_: None)
    cfg = LearnConfig(
        algorithm="groupdro",
        epochs=2,
        batch_size=8,
        eval_splits=("test",),
        lr_schedule="cosine",
        features_from=str(source),
    )
    head = learn(world, tmp_path, cfg, log=lambda *_: None)
    moved = tmp_path / "elsewhere" / source.name  # the same source run, in another folder
    shutil.copytree(source, moved)
    assert (
        learn(world, tmp_path, replace(cfg, features_from=str(moved)), log=lambda *_: None) == head
    )
    trained, _ = load_run(head)
    original, _ = load_run(source)
    frozen = trained.backbone.source.state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in original.state_dict().items())
    # the audit's foreground focus takes its input gradient through the frozen block
    from dreamshift.audit.evaluate import AuditConfig, audit

    (record,) = audit(AuditConfig(models=(str(head),), bootstrap=20), world,
                      tmp_path / "audit.jsonl", log=lambda *_: None)  # fmt: skip
    assert record["foreground_focus"]["summary"]["foreground_focus"] > 0
    assert trained.classifier.in_features == original.k  # the fg block alone
    assert not torch.equal(trained.classifier.weight, original.classifier.weight)
    with pytest.raises(DreamshiftError, match="not a finished learn run"):
        learn(world, tmp_path, LearnConfig(features_from=str(tmp_path / "nothing")))
    with pytest.warns(UserWarning, match="Cramer's V"):  # the source saw confounded data
        erased = learn(world, tmp_path, replace(cfg, erase="background"), log=lambda *_: None)
    head, _ = load_run(erased)
    assert torch.count_nonzero(head.backbone.eraser.matrix) > 0  # fitted, and saved with the run
    with pytest.raises(DreamshiftError, match="--erase 'colour'"):
        learn(world, tmp_path, replace(cfg, erase="colour"))
    with pytest.raises(DreamshiftError, match="pass --input-size 64"):
        learn(world, tmp_path, LearnConfig(features_from=str(source), input_size=32))


def test_leace_leaves_no_linear_trace_of_the_erased_label():
    """After erasure the features have zero covariance with the erased one-hot label, a linear
    probe reads it at chance, and the other label stays readable (Belrose et al. 2023)."""
    import numpy as np

    from dreamshift.learn.erase import Eraser
    from dreamshift.learn.probe import fit_linear_probe

    rng = np.random.default_rng(0)
    n = 4000
    task, nuisance = rng.integers(0, 4, n), rng.integers(0, 5, n)
    x = rng.normal(size=(n, 12))
    x[:, :4] += 3 * np.eye(4)[task]
    x[:, 2:7] += 3 * np.eye(5)[nuisance]  # overlapping directions: not a simple column drop
    eraser = Eraser(12).fit(x[: n // 2], nuisance[: n // 2], 5)
    with torch.no_grad():
        erased = eraser(torch.as_tensor(x, dtype=torch.float32)).numpy()
    fit = erased[: n // 2]
    onehot = np.eye(5)[nuisance[: n // 2]]
    cross = (fit - fit.mean(0)).T @ (onehot - onehot.mean(0)) / len(fit)
    assert np.abs(cross).max() < 1e-4

    def probe_accuracy(features: np.ndarray, labels: np.ndarray, k: int) -> float:
        probe = fit_linear_probe(features[: n // 2], labels[: n // 2], k)
        held_out = torch.as_tensor(features[n // 2 :], dtype=torch.float32)
        return float((probe(held_out).argmax(1).numpy() == labels[n // 2 :]).mean())

    assert probe_accuracy(x, nuisance, 5) > 0.8  # readable before
    assert probe_accuracy(erased, nuisance, 5) < 0.25  # chance 0.2
    assert probe_accuracy(erased, task, 4) > 0.6  # chance 0.25; shared directions cost some


def test_a_learn_run_is_audited_like_any_classifier(world, tmp_path):
    """``dreamshift audit --model RUN`` scores a run as its own evaluation does (same split,
    same preprocessing), so runs can be tested on other datasets."""
    from dreamshift.cli import main
    from dreamshift.data.loading import load_split
    from dreamshift.data.transforms import Preprocessing
    from dreamshift.learn.run import LearnConfig, learn, load_run
    from dreamshift.models.loading import load_classifier

    cfg = LearnConfig(algorithm="d3s", epochs=1, batch_size=8, eval_splits=("test",))
    folder = learn(world, tmp_path / "runs", cfg, log=lambda *_: None)
    algo, record = load_run(folder)
    clf = load_classifier(str(folder))
    assert clf.classes == tuple(record["classes"]) and clf.input_size == 64
    x, _, _ = load_split(world, "test", record["classes"], record["backgrounds"])
    with torch.no_grad():
        expected = algo.predict(Preprocessing.world(64)(x)).numpy()
    assert clf.logits(x.numpy()) == pytest.approx(expected, abs=1e-4)

    results = tmp_path / "audit.jsonl"
    args = ["audit", str(world), "--model", str(folder), "--results", str(results)]
    assert main([*args, "--bootstrap", "10"]) == 0
    (audited,) = [json.loads(line) for line in results.read_text().splitlines()]
    own = json.loads((folder / "done").read_text())["test"]
    assert audited["n"] == own["n"] and audited["acc_avg"] == pytest.approx(own["acc_avg"])

    # the folder says what it is: given where a diffusion model is wanted, it is named as a run
    from dreamshift.errors import DreamshiftError
    from dreamshift.folders import KIND_FILE, folder_kind
    from dreamshift.models.diffusion import locate_model

    assert folder_kind(folder) == "learn-run"
    with pytest.raises(DreamshiftError, match=r"is a `dreamshift learn` run \(a classifier"):
        locate_model(str(folder))
    # a run written before folders named their kind is still recognised by its files
    (folder / KIND_FILE).unlink()
    assert load_classifier(str(folder)).classes == clf.classes


def test_run_folders_are_named_by_the_fields_that_differ_from_the_defaults():
    import hashlib

    from dreamshift.learn.run import LearnConfig, run_folder

    def named(config: dict) -> str:
        text = json.dumps({"config": config, "dataset": "abc"}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    tmp = Path("runs")
    out = run_folder(tmp, LearnConfig(), "abc")
    assert out == tmp / f"erm-{named({})}"  # a field added later keeps this name
    cfg = LearnConfig(algorithm="d3s", epochs=3, hparams=Hparams(mi_weight=0.3))
    expected = named({"algorithm": "d3s", "epochs": 3, "hparams": {"mi_weight": 0.3}})
    assert run_folder(tmp, cfg, "abc") == tmp / f"d3s-{expected}"


def test_cramers_v_by_hand():
    import numpy as np

    from dreamshift.learn.run import cramers_v

    same, crossed = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    assert cramers_v(same, same) == pytest.approx(1.0)
    assert cramers_v(same, crossed) == pytest.approx(0.0)
    # table [[3, 1], [1, 3]]: expected 2 per cell, chi2 = 4 * 1 / 2 = 2, V = sqrt(2 / 8)
    a, b = np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 0, 1, 1, 1, 1, 0])
    assert cramers_v(a, b) == pytest.approx(0.5)


def test_one_training_source_named_with_train_trains_as_the_dataset_itself(world, tmp_path):
    from dreamshift.learn.run import LearnConfig, learn
    from dreamshift.train.checkpoint import load_state

    cfg = LearnConfig(epochs=1, batch_size=8, eval_splits=("test",))
    plain = learn(world, tmp_path / "runs", cfg, log=lambda *_: None)
    named = learn(world, tmp_path / "runs", replace(cfg, train=(f"{world}:train",)),
                  log=lambda *_: None)  # fmt: skip
    a = load_state(plain / "checkpoint.safetensors")["state"]["model"]
    b = load_state(named / "checkpoint.safetensors")["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same images, same order, same weights


def test_several_training_sources_are_mixed_recorded_and_resumed(world, tmp_path):
    """Real + generated (ImageNet-G's concatenation, DataDream's weighted loss as weighted
    draws): each source's share of the draws, the records, a resumed run, the checks."""
    import shutil

    from conftest import small_config
    from dreamshift.compose.runner import compose
    from dreamshift.data.loading import training_sources
    from dreamshift.dream.config import DreamConfig
    from dreamshift.dream.runner import dream
    from dreamshift.errors import DreamshiftError
    from dreamshift.learn.run import LearnConfig, learn, run_folder
    from dreamshift.train.checkpoint import load_state

    def training_data(root, cfg, classes, backgrounds):
        return training_sources(root, cfg.train, cfg.split, cfg.mix, cfg.real_weight, classes,
                                backgrounds)  # fmt: skip

    generated = tmp_path / "generated"  # made by `dreamshift dream` (paste mode: no model)
    dream(DreamConfig(source=str(world), mode="paste", splits=("train", "test")), generated,
          progress=False)  # fmt: skip
    meta = ds.DatasetMeta.read(world).to_dict()
    classes, backgrounds = list(meta["classes"]), list(meta["backgrounds"])
    both = (f"{world}:train", f"{generated}:train")
    cfg = LearnConfig(epochs=2, batch_size=8, eval_splits=("test",), train=both)
    data = training_data(world, cfg, classes, backgrounds)
    assert [s["generated"] for s in data.sources] == [False, True] and data.sampling_weights is None
    assert len(data.table) == 2 * data.sources[0]["n"]

    weighted = replace(cfg, mix="weighted", real_weight=0.8)
    w = training_data(world, weighted, classes, backgrounds).sampling_weights
    n = data.sources[0]["n"]
    assert float(w[:n].sum()) == pytest.approx(0.8) and float(w[n:].sum()) == pytest.approx(0.2)
    by_weight = replace(cfg, train=(f"{world}:train@3", f"{generated}:train@1"))
    shares = training_data(world, by_weight, classes, backgrounds).sources
    assert [s["weight"] for s in shares] == [0.75, 0.25]

    whole, resumed = whole_and_resumed(world, tmp_path, weighted)
    a = load_state(whole / "checkpoint.safetensors")["state"]["model"]
    b = load_state(resumed / "checkpoint.safetensors")["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    (record,) = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").open()]
    assert [(s["n"], s["generated"], s["weight"]) for s in record["sources"]] == [
        (n, False, 0.8), (n, True, pytest.approx(0.2)),
    ]  # fmt: skip
    assert all(0.0 <= s["train_acc"] <= 1.0 for s in record["sources"])

    # a run is named by its sources' content, split and weight, not by where they are
    moved = tmp_path / "moved"
    shutil.copytree(generated, moved)
    renamed = replace(cfg, train=(f"{world}:train", f"{moved}:train"))
    assert run_folder(tmp_path, renamed, "h") == run_folder(tmp_path, cfg, "h")
    assert run_folder(tmp_path, by_weight, "h") != run_folder(tmp_path, cfg, "h")

    other = tmp_path / "other"
    compose(small_config(classes=("bear", "cat", "zebra")), other, progress=False)
    with pytest.raises(DreamshiftError, match=r"other classes than .*: dog, zebra differ"):
        learn(world, tmp_path / "x", replace(cfg, train=(f"{other}:train",)))
    with pytest.raises(DreamshiftError, match="needs real and generated training sources"):
        learn(world, tmp_path / "x", replace(weighted, train=(f"{world}:train",)))
    with pytest.raises(DreamshiftError, match=r"no usable images in split 'anti'.*:SPLIT"):
        learn(world, tmp_path / "x", replace(cfg, train=(f"{generated}:anti",)))
    with pytest.raises(DreamshiftError, match="drop the @WEIGHT"):
        replace(weighted, train=(f"{world}:train@2",)).check()
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.parametrize("algorithm", ["erm", "dann"])
def test_gradient_accumulation_takes_the_steps_of_the_whole_batch(world, tmp_path, algorithm):
    """--grad-accumulation 4: each batch of 16 backpropagated as 4 micro-batches of 4 ends
    with the weights of whole batches (a network without batch norm, whose statistics would
    otherwise differ): equal to float rounding, which AdamW's normalised steps amplify."""
    from dreamshift.learn.run import LearnConfig, learn
    from dreamshift.train.checkpoint import load_state

    def weights(k: int) -> dict[str, torch.Tensor]:
        cfg = LearnConfig(algorithm=algorithm, arch="world-cnn-gn", epochs=2, batch_size=16,
                          input_size=32, eval_splits=(), val_split="",
                          grad_accumulation=k)  # fmt: skip
        run = learn(world, tmp_path / str(k), cfg, log=lambda *_: None, loader_workers=0)
        return load_state(run / "checkpoint.safetensors")

    whole, parts = weights(1), weights(4)
    a, b = whole["state"]["model"], parts["state"]["model"]
    moved = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if k != "step"])
    assert float(moved.max()) < 1e-4 and float(moved.median()) < 1e-7
    assert int(a["step"]) == int(b["step"]) == 2 * (30 // 16)
    for h, g in zip(whole["history"], parts["history"], strict=True):  # the batches' mean loss
        assert g["loss"] == pytest.approx(h["loss"], rel=1e-4)

    # one step of plain SGD (lr 1: the step is the gradient, unnormalised, unlike AdamW's):
    # the micro-batches' gradients add up to the batch's
    from dreamshift.learn.algorithms import ALGORITHMS, Batch

    torch.manual_seed(0)
    one = ALGORITHMS.get(algorithm)("world-cnn-gn", 3, 3)
    four = ALGORITHMS.get(algorithm)("world-cnn-gn", 3, 3)
    four.load_state_dict(one.state_dict())
    four.micro_batches = 4
    for algo in (one, four):
        algo.optimizer = torch.optim.SGD(algo.main_parameters(), lr=1.0)
    batch = Batch(torch.randn(10, 3, 32, 32), torch.arange(10) % 3, torch.arange(10) // 4)
    start = {k: v.clone() for k, v in one.state_dict().items()}
    assert one.update(batch)["loss"] == pytest.approx(four.update(batch)["loss"], rel=1e-5)
    for k, v in one.state_dict().items():
        if v.is_floating_point():
            step_one, step_four = start[k] - v, start[k] - four.state_dict()[k]
            assert torch.allclose(step_one, step_four, rtol=1e-4, atol=1e-6), k


def test_gradient_accumulation_is_refused_where_the_loss_spans_the_batch():
    from dreamshift.errors import DreamshiftError
    from dreamshift.learn.run import LearnConfig

    with pytest.raises(DreamshiftError, match="groupdro's loss is computed over the whole batch"):
        LearnConfig(algorithm="groupdro", grad_accumulation=2).check()
    with pytest.raises(DreamshiftError, match="must lie in"):
        LearnConfig(batch_size=8, grad_accumulation=9).check()
