"""learn on several processes (accelerate launch, gloo on 127.0.0.1) and its streaming loader:
2 x batch 16 is 1 x batch 32, a killed multi-process run resumes to the uninterrupted weights,
loader workers change nothing, and bad files or dying workers stop the run cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import small_config
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose

ACCELERATE = Path(sys.executable).parent / "accelerate"

# run as the script of `accelerate launch`: the CLI, except that with DIE_AT=EPOCH,STEP the
# main process SIGKILLs itself right after writing the checkpoint of that point
LAUNCHED = """
import os, signal, sys
from dreamshift.train import loop
save = loop.save_state
def save_then_die(path, state):
    save(path, state)
    if os.environ.get("DIE_AT") == f"{len(state.get('history', []))},{state['step']}":
        os.kill(os.getpid(), signal.SIGKILL)
loop.save_state = save_then_die
if os.environ.get("RANK") == "1" and os.environ.get("RANK1_ARGS"):
    sys.argv += os.environ["RANK1_ARGS"].split()
from dreamshift.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(tmp_path: Path, args: list[str], processes: int = 2, **env: str):
    """``accelerate launch --multi_gpu --num_processes N`` of ``dreamshift ARGS`` (CPU: gloo)."""
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    command = [
        str(ACCELERATE), "launch", *(["--multi_gpu"] if processes > 1 else []),
        "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
        str(script), *args,
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def weights(out: Path) -> dict[str, torch.Tensor]:
    """The weights of the one run folder under ``out``."""
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return weights_of(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed") / "ds"
    recipe = ShiftRecipe(rho=0.8, train_size=72, val_per_group=0, test_per_group=1,
                         anti_per_group=0)  # fmt: skip
    compose(small_config(recipe=recipe), root, progress=False)
    return root


def test_two_processes_of_batch_16_take_the_steps_of_one_process_of_batch_32(world, tmp_path):
    """72 images, global batch 32: two steps. The gradients averaged over 2 x 16 are those of
    the 32 up to float rounding (~3e-7 here), and AdamW divides each gradient by its own size,
    so rounding in near-zero gradients reaches the weights at ~1e-5 (in one process, two
    half-batches averaged against one batch move them by 3e-6 after one step). A wrong split
    (other images, other augmentations) moves them by the learning rate, 2e-3. GroupNorm:
    batch norm would see other batch statistics."""
    from dreamshift.learn.run import LearnConfig, learn

    cfg = LearnConfig(arch="world-cnn-gn", epochs=1, batch_size=32, eval_splits=())
    learn(world, tmp_path / "one", cfg, log=lambda *_: None, loader_workers=0)
    result = launch(tmp_path, ["learn", str(world), "--out", str(tmp_path / "two"), "--arch",
                               "world-cnn-gn", "--epochs", "1", "--batch-size", "16"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("acc_avg") == 1  # one process reports
    learn(world, tmp_path / "half", replace(cfg, batch_size=16), log=lambda *_: None)

    def differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([(a[k] - b[k]).abs().flatten() for k in a if k != "step"])

    one, two, half = (
        weights(tmp_path / "one"),
        weights(tmp_path / "two"),
        weights(tmp_path / "half"),
    )
    assert int(one["step"]) == int(two["step"]) == 2
    same, wrong = differences(one, two), differences(one, half)
    assert float(same.max()) < 1e-4 and float(same.median()) < 1e-7
    assert float(wrong.median()) > 1e-4  # 1 x 16: other batches, other weights


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(world, tmp_path):
    from dreamshift.cli import main

    """GroupDRO on world-cnn: its group weights and the batch norm statistics are buffers that
    every process takes from the main one after each update, so the main one's checkpoint is
    every process's state."""
    args = ["learn", str(world), "--algorithm", "groupdro", "--arch", "world-cnn", "--epochs",
            "2", "--batch-size", "8", "--checkpoint-every", "1"]  # fmt: skip
    whole = launch(tmp_path, [*args, "--out", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch(tmp_path, [*args, "--out", str(tmp_path / "resumed")], DIE_AT="1,2")
    assert killed.returncode != 0  # the main process died mid-epoch 2, after step 2 of 4
    (folder,) = (tmp_path / "resumed").iterdir()
    assert not (folder / "done").exists()
    resumed = launch(tmp_path, [*args, "--out", str(tmp_path / "resumed")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 2, step 2" in resumed.stdout
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)  # batch norm statistics included
    # on another number of processes it is another run (another global batch), named apart
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 0
    assert len([p for p in (tmp_path / "resumed").iterdir() if p.is_dir()]) == 2
    assert torch.equal(weights_of(folder)["classifier.weight"], b["classifier.weight"])


def test_processes_that_disagree_on_the_config_are_refused_before_the_first_step(world, tmp_path):
    result = launch(tmp_path, ["learn", str(world), "--out", str(tmp_path / "runs"),
                               "--epochs", "1", "--batch-size", "8"],
                    RANK1_ARGS="--epochs 2")  # fmt: skip
    assert result.returncode != 0
    assert "the 2 processes disagree on their run" in result.stderr
    assert not list((tmp_path / "runs").glob("*/checkpoint.safetensors"))


def test_weights_do_not_depend_on_loader_workers(world, tmp_path):
    from dreamshift.learn.run import LearnConfig, learn

    cfg = LearnConfig(algorithm="d3s", epochs=2, batch_size=16, eval_splits=())
    for workers in (0, 2):
        learn(world, tmp_path / str(workers), cfg, log=lambda *_: None, loader_workers=workers)
    a, b = weights(tmp_path / "0"), weights(tmp_path / "2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    weighted = replace(cfg, algorithm="erm", train=(f"{world}:train@1",))  # weighted draws
    for workers in (0, 2):
        learn(world, tmp_path / f"w{workers}", weighted, log=lambda *_: None,
              loader_workers=workers)  # fmt: skip
    a, b = weights(tmp_path / "w0"), weights(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["changed", "vanished"])
def test_a_png_changed_or_vanished_since_the_manifest_stops_the_run_naming_it(
    world, tmp_path, capsys, damage
):
    import shutil

    from dreamshift.cli import main
    from dreamshift.data import dataset as ds

    copy = tmp_path / "ds"
    shutil.copytree(world, copy)
    row = next(r for r in ds.read_manifest(copy).to_pylist() if r["split"] == "train")
    target = copy / row["path"]
    if damage == "changed":
        target.write_bytes(target.read_bytes() + b"\0")  # still a valid PNG, other bytes
    else:
        target.unlink()
    code = main(["learn", str(copy), "--out", str(tmp_path / "runs"), "--epochs", "1",
                 "--batch-size", "8", "--loader-workers", "2"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert str(target) in err and f"re-run the `dreamshift compose` command that made {copy}" in err
    assert ("changed since the manifest" if damage == "changed" else "missing") in err


def test_a_dying_loader_worker_stops_the_run_with_its_cause(world, tmp_path, monkeypatch):
    from dreamshift.data.torch_dataset import StreamedImages
    from dreamshift.learn.run import LearnConfig, learn

    def die(self, key):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(StreamedImages, "__getitem__", die)  # forked workers inherit it
    cfg = LearnConfig(epochs=1, batch_size=8, eval_splits=())
    stopped = r"DataLoader worker \(pid.*(is killed by signal|exited unexpectedly)"
    with pytest.raises(RuntimeError, match=stopped):  # torch's own words, either way
        learn(world, tmp_path / "runs", cfg, log=lambda *_: None, loader_workers=2)


def test_bf16_autocast_trains_and_is_named_apart(world, tmp_path):
    import json

    from dreamshift.learn.run import LearnConfig, learn

    cfg = LearnConfig(epochs=1, batch_size=16, eval_splits=("test",))
    fp32 = learn(world, tmp_path, cfg, log=lambda *_: None, loader_workers=0)
    bf16 = learn(world, tmp_path, replace(cfg, mixed_precision="bf16"), log=lambda *_: None,
                 loader_workers=0)  # fmt: skip
    assert bf16 != fp32  # another config, another run folder
    assert json.loads((bf16 / "config.json").read_text())["config"]["mixed_precision"] == "bf16"
    a, b = weights_of(fp32), weights_of(bf16)
    assert all(torch.isfinite(b[k]).all() for k in b)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    from dreamshift.train.checkpoint import load_state

    state: dict[str, torch.Tensor] = load_state(folder / "checkpoint.safetensors")["state"]["model"]
    return state


def test_tune_on_two_processes_of_batch_1_takes_the_steps_of_one_process_of_batch_2(
    tmp_path, tiny_sd, guides
):
    """LoRA on tiny-dream: each process computes its rows of the global batch (drawn alike on
    both), gradients are averaged before clipping; only the main process writes."""
    from safetensors.torch import load_file

    from dreamshift.models.diffusion import LORA_FILE
    from dreamshift.tune.config import TuneConfig
    from dreamshift.tune.run import tune

    cfg = TuneConfig(model=str(tiny_sd), steps=3, batch_size=2, rank=4, lr=1e-3, device="cpu")
    one = tune(guides, tmp_path / "one", cfg, progress=False, log=lambda *_: None)
    result = launch(tmp_path, ["tune", str(guides), "--out", str(tmp_path / "two"), "--model",
                               str(tiny_sd), "--steps", "3", "--batch-size", "1", "--rank", "4",
                               "--lr", "1e-3", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("tuned ") == 1  # the main process reports, the other is quiet
    (two,) = [p for p in (tmp_path / "two").iterdir() if p.is_dir()]
    records = (tmp_path / "two" / "results.jsonl").read_text().splitlines()
    assert len(records) == 1 and json.loads(records[0])["processes"] == 2
    a, b = load_file(one / LORA_FILE), load_file(two / LORA_FILE)
    assert a.keys() == b.keys()
    moved = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float(moved.max()) < 1e-4 and float(moved.median()) < 1e-7


def test_a_changed_png_stops_every_process_with_its_name(world, tmp_path):
    """Only one process draws the damaged image; every one stops with its one line (the
    launcher may end the other before it prints), none with a traceback of a broken
    collective."""
    import shutil

    from dreamshift.data import dataset as ds

    copy = tmp_path / "ds"
    shutil.copytree(world, copy)
    row = next(r for r in ds.read_manifest(copy).to_pylist() if r["split"] == "train")
    target = copy / row["path"]
    target.write_bytes(target.read_bytes() + b"\0")
    result = launch(tmp_path, ["learn", str(copy), "--out", str(tmp_path / "runs"), "--epochs",
                               "1", "--batch-size", "8"])  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "dreamshift: error:" in line]
    assert 1 <= len(errors) <= 2 and all(str(target) in line for line in errors)
    assert "]: Traceback" not in result.stderr  # no process died in a collective


def test_a_checkpoint_of_another_process_count_is_refused(tmp_path):
    """Runs on N > 1 processes are named apart, so this meets only a moved or copied folder."""
    from dreamshift.errors import DreamshiftError
    from dreamshift.train.checkpoint import save_state
    from dreamshift.train.loop import TrainState, fit_steps

    w = torch.zeros(1)
    path = tmp_path / "checkpoint.safetensors"
    save_state(path, {"state": {"w": w}, "step": 1, "values": [0.0], "processes": 2})
    with pytest.raises(DreamshiftError, match="written by a run on 2 processes; this one has 1"):
        fit_steps("toy", 2, lambda s, g: 0.0, 0, TrainState(w=w), path, 1, progress=False)
