"""``--executor ray``: the same bytes as the local executor, resume across executors, lost
workers redone elsewhere, audit records equal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import small_config, tree_digest
from dreamshift.cli import main
from dreamshift.compose.runner import compose
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream
from dreamshift.engine.executors import LocalPool
from dreamshift.errors import DreamshiftError

ray = pytest.importorskip("ray", reason="`make setup` installs the ray extra")
from dreamshift.engine.ray_executor import RayExecutor  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance on this machine for the module (2 CPUs), as `ray.init(num_cpus=2)`."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


class StopAfter:
    """An executor that runs ``shards`` shards locally, then stops the run like Ctrl-C."""

    def __init__(self, shards: int):
        self.shards = shards

    def map(self, setup, fn, items):
        for done, result in enumerate(LocalPool(1).map(setup, fn, items), 1):
            yield result
            if done == self.shards:
                raise KeyboardInterrupt


def test_compose_and_dream_on_ray_give_the_local_bytes(local_ray, tmp_path, tiny_sd, guides):
    compose(small_config(), tmp_path / "local", workers=2, progress=False)
    compose(small_config(), tmp_path / "ray", executor=RayExecutor(), progress=False)
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "local")
    cfg = DreamConfig(source=str(guides), model=str(tiny_sd), steps=2, strength=0.5, threads=1,
                      shard_size=3)  # fmt: skip
    dream(cfg, tmp_path / "dream-local", progress=False)
    dream(cfg, tmp_path / "dream-ray", executor=RayExecutor(actors=2), progress=False)
    assert tree_digest(tmp_path / "dream-ray") == tree_digest(tmp_path / "dream-local")


def test_a_run_started_on_one_executor_resumes_on_the_other(local_ray, tmp_path):
    whole = tmp_path / "whole"
    compose(small_config(), whole, progress=False)
    total = len(list((whole / "shards").glob("*.done")))
    for first, then in (("local", "ray"), ("ray", "local")):
        out = tmp_path / f"{first}-then-{then}"
        if first == "local":
            with pytest.raises(KeyboardInterrupt):
                compose(small_config(), out, executor=StopAfter(2), progress=False)
        else:  # Ray stops after the first shards: the run is cut while they are written
            with pytest.raises(KeyboardInterrupt):
                for_ray_then_stop(out)
        done = sorted(p.name for p in (out / "shards").glob("*.done"))
        assert 0 < len(done) < total, done
        result = compose(small_config(), out, progress=False,
                         executor=RayExecutor() if then == "ray" else None)  # fmt: skip
        assert result.shards_run == total - len(done)
        assert tree_digest(out) == tree_digest(whole)


def for_ray_then_stop(out: Path) -> None:
    """Compose on Ray and stop the driver after two shards have been yielded."""
    executor = RayExecutor(actors=1)
    original = executor.map

    def two_then_stop(setup, fn, items):
        for n, result in enumerate(original(setup, fn, items), 1):
            yield result
            if n == 2:
                raise KeyboardInterrupt

    executor.map = two_then_stop  # type: ignore[method-assign]
    compose(small_config(), out, executor=executor, progress=False)


def test_audit_on_ray_writes_the_local_records(local_ray, tmp_path, guides):
    args = ["audit", str(guides), "--model", "world-cnn", "--model", "world-resnet18",
            "--bootstrap", "20"]  # fmt: skip
    assert main([*args, "--results", str(tmp_path / "local.jsonl")]) == 0
    assert main([*args, "--results", str(tmp_path / "ray.jsonl"), "--executor", "ray"]) == 0
    strip = ("time", "images_per_s", "predictions", "predictions_spurious")

    def records(name: str) -> list[dict]:
        rows = [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in strip} for r in rows]

    assert records("ray.jsonl") == records("local.jsonl")
    assert [r["model"] for r in records("ray.jsonl")] == ["world-cnn", "world-resnet18"]


def test_an_error_in_a_shard_on_ray_stops_the_run_with_it(local_ray, tmp_path):
    def fail(state, item):
        raise ValueError(f"bug in shard {item}")

    with pytest.raises(ValueError, match="bug in shard"):
        list(RayExecutor().map(lambda: None, fail, [1, 2, 3]))


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    from dreamshift.engine.ray_executor import import_ray

    with pytest.raises(DreamshiftError, match=r"dreamshift\[ray\]"):
        import_ray()


@pytest.mark.slow
def test_two_node_cluster_redoes_the_shards_of_a_killed_worker_node(tmp_path):
    """A head and a worker node started with `ray start` on 127.0.0.1; the worker node is
    killed (SIGKILL to its raylet and workers) while it holds shards; they are redone on the
    head and the dataset is byte-identical to a local run."""
    from dreamshift.compose.config import ShiftRecipe

    recipe = ShiftRecipe(rho=0.8, train_size=600, val_per_group=2, test_per_group=2,
                         anti_per_group=1)  # fmt: skip
    cfg = small_config(recipe=recipe, shard_size=10)
    compose(cfg, tmp_path / "local", progress=False)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = "6391"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    try:
        worker_node = [ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                       "--node-ip-address=127.0.0.1", '--resources={"doomed": 1}',
                       "--disable-usage-stats"]  # fmt: skip
        subprocess.run(worker_node, env=env, check=True, capture_output=True)
        driver = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; sys.path.insert(0, 'tests');"
             "from conftest import small_config; from dreamshift.compose.config import ShiftRecipe;"
             "from dreamshift.compose.runner import compose;"
             "from dreamshift.engine.ray_executor import RayExecutor;"
             "cfg = small_config(recipe=ShiftRecipe(rho=0.8, train_size=600, val_per_group=2,"
             " test_per_group=2, anti_per_group=1), shard_size=10);"
             f"compose(cfg, Path({str(tmp_path / 'ray')!r}), progress=False,"
             f" executor=RayExecutor('127.0.0.1:{port}', actors=2))"],
            env=env, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        shards = tmp_path / "ray" / "shards"
        deadline = time.time() + 120
        while len(list(shards.glob("*.done"))) < 5:
            assert time.time() < deadline and driver.poll() is None, "the run did not start"
            time.sleep(0.2)
        killed = kill_node_with_resource("doomed")
        assert killed, "found no process of the worker node"
        assert driver.wait(timeout=300) == 0
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "local")


def kill_node_with_resource(resource: str) -> list[int]:
    """SIGKILL the raylet whose command line names ``resource`` and its worker processes."""
    killed = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "raylet" in cmd and resource in cmd:
            raylet = int(pid)
            children = subprocess.run(["pgrep", "-P", str(raylet)], capture_output=True,
                                      text=True).stdout.split()  # fmt: skip
            for p in [raylet, *map(int, children)]:
                try:
                    os.kill(p, signal.SIGKILL)
                    killed.append(p)
                except ProcessLookupError:
                    pass
    return killed


def test_the_image_size_limit_reaches_the_actors(local_ray, world_folders, tmp_path, monkeypatch):
    """`dreamshift --max-pixels N` holds on a Ray actor as in a local worker."""
    import shutil

    from PIL import Image

    from dreamshift.data import dataset as ds
    from dreamshift.data.images import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, "")  # restored after the test whatever --max-pixels sets
    fg = tmp_path / "fg"
    for c in ("bear", "cat"):
        shutil.copytree(world_folders / "foregrounds" / c, fg / c)
    Image.new("RGBA", (1200, 1000), (200, 10, 10, 255)).save(fg / "cat" / "huge.png")
    out = tmp_path / "out"
    assert main(["--max-pixels", "1000000", "compose", "--out", str(out), "--foregrounds",
                 str(fg), "--backgrounds", str(world_folders / "backgrounds"), "--train-size",
                 "200", "--val-per-group", "0", "--test-per-group", "0", "--anti-per-group", "0",
                 "--share-foregrounds", "--executor", "ray", "--workers", "1",
                 "--no-progress"]) == 1  # fmt: skip
    failed = [r for r in ds.read_rows(out) if r.status == ds.FAILED]
    assert failed and all("above the limit of 1,000,000" in str(r.error) for r in failed)
