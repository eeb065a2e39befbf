"""The shard engine: pluggable executors, one run per output folder, disk errors, workers."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import small_config, tree_digest
from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream
from dreamshift.engine.output import lock_path
from dreamshift.errors import DreamshiftError


class Backwards:
    """An executor in a few lines: every shard in this process, the last shard first."""

    def map(self, setup, fn, items):
        state = setup()
        for item in reversed(items):
            yield fn(state, item)


@pytest.fixture(scope="module")
def guides(tmp_path_factory) -> Path:
    """12 composed guides: 2 classes x 2 backgrounds."""
    cfg = ComposeConfig(
        classes=("cat", "dog"),
        background_names=("grass", "snow"),
        recipe=ShiftRecipe(rho=1.0, train_size=4, val_per_group=0, test_per_group=1),
        placement=Placement(scale=(0.5, 0.5)),
    )
    out = tmp_path_factory.mktemp("guides") / "paste"
    compose(cfg, out, progress=False)
    return out


def test_an_executor_from_outside_gives_the_same_bytes(tmp_path, tiny_sd, guides):
    compose(small_config(), tmp_path / "compose-pool", workers=2, progress=False)
    compose(small_config(), tmp_path / "compose-mine", executor=Backwards(), progress=False)
    assert tree_digest(tmp_path / "compose-mine") == tree_digest(tmp_path / "compose-pool")

    cfg = DreamConfig(
        source=str(guides), model=str(tiny_sd), steps=2, strength=0.5, threads=1, shard_size=3
    )
    dream(cfg, tmp_path / "dream-default", progress=False)
    dream(cfg, tmp_path / "dream-mine", executor=Backwards(), progress=False)
    digest = tree_digest(tmp_path / "dream-mine")
    assert digest == tree_digest(tmp_path / "dream-default")
    assert sum(name.endswith(".png") for name in digest) == ds.read_manifest(guides).num_rows


HOLD = """
import sys, time
from pathlib import Path
from dreamshift.engine.output import claim_output
with claim_output(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_run_into_the_same_folder_stops_naming_the_first(tmp_path, guides):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(DreamshiftError, match=rf"(?s)pid {holder.pid}: .*claim_output"):
            compose(small_config(), out, progress=False)
        paste = DreamConfig(source=str(guides), mode="paste")
        busy = rf"{re.escape(str(out))} is being written by another run \(pid {holder.pid}"
        with pytest.raises(DreamshiftError, match=busy):
            dream(paste, out, progress=False)
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, stale
        holder.wait()
    assert lock_path(out).is_file()
    assert compose(small_config(), out, progress=False).num_failed == 0  # taken over
    assert not lock_path(out).exists()


def test_an_out_folder_whose_parent_is_not_writable_holds_its_lock_inside(tmp_path, monkeypatch):
    import dreamshift.engine.output as output

    out = tmp_path / "scratch-user"
    out.mkdir()  # made for the user by an administrator, in a folder only they can write
    real = os.access
    monkeypatch.setattr(output.os, "access", lambda p, m: Path(p) != tmp_path and real(p, m))
    assert lock_path(out) == out / ".lock"
    assert compose(small_config(), out, progress=False).num_failed == 0
    assert not (out / ".lock").exists() and not lock_path(out).exists()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "no write permission"),
    ],
)
def test_a_full_or_read_only_disk_is_one_clear_error(tmp_path, monkeypatch, code, message):
    real = ds.write_atomic
    out = tmp_path / "out"

    def write_atomic(path, data):  # the rows of the second shard
        if path.name == "00001.parquet":
            name = None if code == errno.ENOSPC else str(path)  # a full disk names no file
            raise OSError(code, os.strerror(code), name)
        real(path, data)

    monkeypatch.setattr(ds, "write_atomic", write_atomic)
    clear = rf"cannot write to {re.escape(str(out))}: .*{message}"
    with pytest.raises(DreamshiftError, match=clear) as info:
        compose(small_config(), out, progress=False)
    assert "\n" not in str(info.value)
    assert ds.shard_is_done(ds.DatasetLayout(out), 0)
    assert not ds.shard_is_done(ds.DatasetLayout(out), 1)

    monkeypatch.undo()  # space freed: the rerun continues
    reference = tmp_path / "reference"
    compose(small_config(), reference, progress=False)
    shards = len(list((reference / "shards").glob("*.done")))
    assert compose(small_config(), out, progress=False).shards_run == shards - 1
    assert tree_digest(out) == tree_digest(reference)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_clear_error(tmp_path, guides):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    with pytest.raises(DreamshiftError, match=rf"cannot write to {re.escape(str(out))}: "):
        compose(small_config(), out, progress=False)
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    paste = DreamConfig(source=str(guides), mode="paste")
    with pytest.raises(DreamshiftError, match=rf"cannot write to {re.escape(str(parent))}/dream"):
        dream(paste, parent / "dream", progress=False)


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="workers die with their parent on Linux")
def test_killing_the_main_process_leaves_no_worker_running(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "dreamshift.cli", "compose", "--out", str(out), "--workers", "2",
        "--classes", "bear,cat,dog,cow", "--background-names", "grass,water,snow,night",
        "--train-size", "400", "--shard-size", "16", "--size", "96", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            workers = _children(proc.pid)
            time.sleep(0.01)
        assert len(workers) >= 2, "the run did not start its workers"
        os.kill(proc.pid, signal.SIGKILL)  # the main process only
        proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)], "workers outlived their parent"
    finally:
        with contextlib.suppress(ProcessLookupError):  # its process group, if anything is left
            os.killpg(proc.pid, signal.SIGKILL)
