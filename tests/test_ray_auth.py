"""A Ray cluster with token authentication (Ray >= 2.52; on by default for clusters in later
releases) and a driver on a machine that lacks its token: one line that says what to set,
then the same run with the token. In a module of its own: `ray stop` ends every Ray process
of the machine, the in-process instance of test_ray.py's tests included."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="`make setup` installs the ray extra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_driver_without_the_clusters_token_is_told_how_to_join(tmp_path):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head_home, other_home = tmp_path / "head", tmp_path / "other"
    head_home.mkdir()
    other_home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    head = {**base, "HOME": str(head_home), "RAY_AUTH_MODE": "token"}
    token = subprocess.run([ray_bin, "get-auth-token", "--generate"], env=head, check=True,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert token and (head_home / ".ray" / "auth_token").is_file()
    port = free_port()
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
                   env=head, check=True, capture_output=True)  # fmt: skip
    try:
        command = [sys.executable, "-m", "dreamshift.cli", "compose", "--classes", "cat,dog",
                   "--background-names", "grass,snow", "--train-size", "8", "--val-per-group",
                   "0", "--test-per-group", "1", "--anti-per-group", "0", "--no-progress",
                   "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]  # fmt: skip
        other = {**base, "HOME": str(other_home)}  # another machine: no token file, no env
        refused = subprocess.run([*command, "--out", str(tmp_path / "refused")], env=other,
                                 capture_output=True, text=True, timeout=180)  # fmt: skip
        assert refused.returncode == 1, refused.stderr[-2000:]
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("dreamshift: error: the Ray cluster at") and "Traceback" not in (
            refused.stderr
        )
        assert "RAY_AUTH_MODE=token RAY_AUTH_TOKEN=" in last and "ray get-auth-token" in last
        given = {**other, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        joined = subprocess.run([*command, "--out", str(tmp_path / "joined")], env=given,
                                capture_output=True, text=True, timeout=180)  # fmt: skip
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert (tmp_path / "joined" / "manifest.parquet").is_file()
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=head, capture_output=True)
