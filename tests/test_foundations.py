"""The layers every stage stands on: configs, checkpoints, the training loop."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch

from conftest import small_config
from dreamshift.audit.evaluate import AuditConfig
from dreamshift.cli import main
from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.config import Config
from dreamshift.data import dataset as ds
from dreamshift.dream.config import DreamConfig
from dreamshift.errors import DreamshiftError
from dreamshift.learn.hparams import Hparams
from dreamshift.learn.run import LearnConfig, learn, load_run
from dreamshift.models.loading import load_classifier
from dreamshift.studies.oracles import OracleConfig
from dreamshift.studies.tiny_dream import TrainDreamConfig
from dreamshift.train.checkpoint import load_state, save_state
from dreamshift.train.loop import TrainState, fit

CONFIGS = [ComposeConfig, Placement, ShiftRecipe, DreamConfig, AuditConfig,
           LearnConfig, Hparams, OracleConfig, TrainDreamConfig]  # fmt: skip


def test_every_config_shares_the_one_base():
    assert all(issubclass(c, Config) for c in CONFIGS)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_an_unknown_key_is_refused_by_name(cls):
    with pytest.raises(DreamshiftError, match=r"unknown .* key\(s\) \['stepz'\]: valid keys are"):
        cls.from_dict({"stepz": 1})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_a_wrong_type_is_refused_by_name(cls):
    """Every field given a value of another type (a list where a scalar is due, a string where a
    number is due) is refused with a message that names the field."""
    required = {"models": ("world-cnn",)} if cls is AuditConfig else {}
    required |= {"source": "x"} if cls is DreamConfig else {}
    base = cls(**required)
    for f in dataclasses.fields(cls):
        value = getattr(base, f.name)
        if isinstance(value, Config):
            continue
        wrong = [value] if not isinstance(value, tuple) else "not a list"
        with pytest.raises(DreamshiftError, match=rf"\b{f.name}\b"):
            dataclasses.replace(base, **{f.name: wrong}).check()


def test_a_yaml_config_with_a_typo_or_a_wrong_type_stops_before_writing(tmp_path, capsys):
    config = tmp_path / "compose.yaml"
    config.write_text("size: 64\nplacement:\n  scale: 0.3\n  positon: center\n")
    out = tmp_path / "out"
    assert main(["compose", "--out", str(out), "--config", str(config)]) == 1
    assert "unknown placement config key(s) ['positon']" in capsys.readouterr().err
    for nested in ("placement: 0.3", "recipe: null"):
        config.write_text(nested + "\n")
        assert main(["compose", "--out", str(out), "--config", str(config)]) == 1
        assert "give a mapping of" in capsys.readouterr().err
    config.write_text("size: '64'\n")
    assert main(["compose", "--out", str(out), "--config", str(config)]) == 1
    assert "size = '64' must be a whole number" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "ds"
    compose(small_config(size=32), root, progress=False)
    return root


def test_an_invalid_choice_stops_a_learn_sweep_before_anything_is_written(world, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["learn", str(world), "--out", str(out), "--epochs", "1", "--input-size", "32"]
    assert main([*argv, "--algorithm", "d3s", "--mi-estimator", "foo"]) == 1
    assert "hparams.mi_estimator = 'foo': choose one of mine, critic, classifier" in (
        capsys.readouterr().err
    )
    assert main([*argv, "--algorithm", "erm,ermm"]) == 1  # the first run would be valid
    assert "algorithm = 'ermm': choose one of" in capsys.readouterr().err
    assert not out.exists()


def test_learn_on_a_dataset_without_its_split_names_it_and_writes_nothing(world, tmp_path):
    with pytest.raises(DreamshiftError, match=r"no usable images in split 'training' \(it has"):
        learn(world, tmp_path / "runs", LearnConfig(split="training", input_size=32))
    assert not (tmp_path / "runs").exists()


def test_a_learn_run_loads_as_a_classifier_in_a_fresh_interpreter(world, tmp_path):
    """No `import dreamshift.learn.run` needed: the entry point imports it on lookup."""
    import subprocess
    import sys

    folder = learn(world, tmp_path, LearnConfig(epochs=1, batch_size=8, input_size=32),
                   log=lambda *_: None)  # fmt: skip
    code = (
        "import sys; from dreamshift.models.loading import load_classifier; "
        f"clf = load_classifier({str(folder)!r}); "
        "print(clf.input_size, len(clf.classes), 'dreamshift.learn.run' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["32", "3", "True"], out.stderr


class _Payload:
    """What an attacker hides in a pickle: unpickling it calls a function of their choosing."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_run_folder_holding_a_pickled_payload_is_refused(world, tmp_path):
    folder = learn(world, tmp_path, LearnConfig(epochs=1, batch_size=8, input_size=32),
                   log=lambda *_: None)  # fmt: skip
    (folder / "checkpoint.safetensors").unlink()
    marker = tmp_path / "the payload ran"
    with open(folder / "checkpoint.pt", "wb") as f:  # the format of earlier versions
        pickle.dump({"model": _Payload(marker)}, f, protocol=2)
    with pytest.raises(DreamshiftError, match="refuses it"):
        load_run(folder)
    with pytest.raises(DreamshiftError, match="refuses it"):
        load_classifier(str(folder))
    assert not marker.exists()
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DreamshiftError, match=r"checkpoint\.pt"):
        load_run(folder)


def test_a_checkpoint_keeps_optimizer_state_exactly(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_state(tmp_path / "s.safetensors", {"opt": opt.state_dict(), "net": net.state_dict()})
    back = load_state(tmp_path / "s.safetensors")
    assert back["opt"]["param_groups"] == opt.state_dict()["param_groups"]
    for k, v in opt.state_dict()["state"].items():
        assert all(torch.equal(v[n], back["opt"]["state"][k][n]) for n in v)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(DreamshiftError, match=r"bad\.safetensors is not a dreamshift checkpoint"):
        load_state(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    "state",
    [
        '{"__dict__": [["step"',
        "{}",
        "[]",
        "null",
        "42",
        '{"__dict__": [["history", 7]]}',
        '{"__dict__": 5}',
    ],
)
def test_a_well_formed_checkpoint_with_a_damaged_state_is_one_clear_error(world, tmp_path, state):
    """A safetensors file whose tensors are fine but whose embedded state is damaged: loading
    it for a resume or as a classifier is one line saying to delete it, not a traceback."""
    from safetensors.torch import load_file, save_file

    cfg = LearnConfig(epochs=1, batch_size=8, input_size=32)
    folder = learn(world, tmp_path, cfg, log=lambda *_: None)
    path = folder / "checkpoint.safetensors"
    save_file(load_file(str(path)), str(path), metadata={"dreamshift_state": state})
    message = r"checkpoint\.safetensors holds a damaged training state .* delete it"
    with pytest.raises(DreamshiftError, match=message):
        load_classifier(str(folder))
    (folder / "done").unlink()  # the same run again resumes from the checkpoint
    with pytest.raises(DreamshiftError, match=message):
        learn(world, tmp_path, cfg, log=lambda *_: None)


def _toy_run(tmp_path, stop_at_epoch=None):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=3 * 4)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))

    def update(step, idx, g):
        noise = torch.randn(len(idx), 4, generator=g) * 0.1  # draws from the epoch's generator
        loss = torch.nn.functional.cross_entropy(net(x[idx] + noise), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    def log(line):
        if stop_at_epoch and f"epoch {stop_at_epoch}/" in line:
            raise KeyboardInterrupt

    history = fit("toy", 32, 8, 3, update, lambda e: torch.Generator().manual_seed(e),
                  TrainState(net=net, opt=opt, sched=sched), tmp_path / "ckpt.safetensors",
                  log=log)  # fmt: skip
    return net, history


def test_a_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    whole, history = _toy_run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _toy_run(tmp_path / "b", stop_at_epoch=2)
    resumed, resumed_history = _toy_run(tmp_path / "b")
    assert [h["loss"] for h in history] == [h["loss"] for h in resumed_history]
    assert all(
        torch.equal(a, b)
        for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True)
    )


SCHEMA_2 = Path(__file__).parent / "fixtures" / "schema-2-datasets"  # written before DatasetMeta


@pytest.mark.parametrize("name", ["guides", "paste"])
def test_a_dataset_written_before_the_typed_metadata_reads_writes_back_and_audits(name, tmp_path):
    """dataset.json of a composed and a dreamed (paste) dataset of schema 2, made by the
    version before DatasetMeta: read typed, written back key for key, audited end to end."""
    import json
    import shutil

    from dreamshift.audit.evaluate import audit

    root = tmp_path / name
    shutil.copytree(SCHEMA_2 / name, root)
    raw = json.loads((root / ds.DATASET_JSON).read_text())
    meta = ds.DatasetMeta.read(root)
    assert meta.to_dict() == raw
    assert meta.classes == ("cat", "zebra") and meta.backgrounds == ("grass", "snow")
    assert meta.stage == ("compose" if name == "guides" else "dream")
    assert meta.confounder_strength == 0.95 and meta.splits["test"].num_samples == 4
    assert (meta.runtime is None) and (meta.source != "") == (name == "paste")
    (record,) = audit(AuditConfig(models=("world-cnn",), bootstrap=10), root)
    assert record["n"] == 4 and record["dataset_hash"] == raw["content_hash"]


def test_a_misspelt_key_is_refused_by_name_in_dataset_json_and_in_manifest_rows(tmp_path):
    import json
    import shutil

    root = tmp_path / "guides"
    shutil.copytree(SCHEMA_2 / "guides", root)
    raw = json.loads((root / ds.DATASET_JSON).read_text())
    raw["clases"] = raw.pop("classes")
    (root / ds.DATASET_JSON).write_text(json.dumps(raw))
    with pytest.raises(DreamshiftError, match=r"dataset.json: unknown key\(s\) \['clases'\]"):
        ds.DatasetMeta.read(root)
    row = {"sample_id": "a-0", "split": "train", "fg_clas": "cat"}
    with pytest.raises(ValueError, match=r"row 'a-0' has unknown column\(s\) \['fg_clas'\]"):
        ds.SampleRow.from_dict(row)


def test_a_learn_run_on_a_dream_records_its_guides_rho_even_where_the_guides_are_gone(tmp_path):
    """The dream's dataset.json holds its guides' confounder strength: no need to find them."""
    import json
    import shutil

    root = tmp_path / "paste"
    shutil.copytree(SCHEMA_2 / "paste", root)
    meta = json.loads((root / ds.DATASET_JSON).read_text())
    meta["config"]["source"] = str(tmp_path / "moved-away")  # the guides are not there
    (root / ds.DATASET_JSON).write_text(json.dumps(meta))
    cfg = LearnConfig(epochs=1, batch_size=4, input_size=16)
    learn(root, tmp_path / "runs", cfg, log=lambda *_: None)
    lines = (tmp_path / "runs" / "results.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert record["dataset_stage"] == "dream" and record["rho"] == 0.95


def test_a_folder_marked_as_another_output_is_refused_naming_its_kind(tmp_path, capsys):
    """audit --model given a tune run (LoRA adapters), or a folder whose marker is damaged or
    names a kind this version does not know: one line saying what the folder is."""
    from dreamshift.cli import main
    from dreamshift.folders import KIND_FILE, mark_folder

    world = tmp_path / "world"
    assert main(["compose", "--out", str(world), "--classes", "cat,dog", "--background-names",
                 "grass,snow", "--train-size", "0", "--val-per-group", "0", "--test-per-group",
                 "1", "--anti-per-group", "0", "--no-progress"]) == 0  # fmt: skip
    run = tmp_path / "tuned"
    run.mkdir()
    mark_folder(run, "tune-run")
    capsys.readouterr()
    assert main(["audit", str(world), "--model", str(run)]) == 1
    assert "is a `dreamshift tune` run (LoRA adapters" in capsys.readouterr().err
    for text, says in (("{", "is damaged"), ('{"kind": "sweep-9"}', "does not know")):
        (run / KIND_FILE).write_text(text)
        assert main(["audit", str(world), "--model", str(run)]) == 1
        err = capsys.readouterr().err
        assert str(run / KIND_FILE) in err and says in err and "Traceback" not in err
