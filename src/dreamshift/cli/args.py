"""Argument types and small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def floats(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"expected MIN or MIN,MAX, got {text!r}")


def names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def pairs(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in names(text):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected CLASS=BACKGROUND, got {item!r}")
        c, b = item.split("=", 1)
        out.append((c.strip(), b.strip()))
    return tuple(out)


def report_failed(num_failed: int, hint: str) -> int:
    """Exit status of a batch run: 1 (and a hint on stderr) when some samples failed."""
    if num_failed:
        print(f"{num_failed} samples failed: {hint}", file=sys.stderr)
        return 1
    return 0


def add_executor(p: argparse.ArgumentParser) -> None:
    """``--executor local|ray`` and ``--ray-address``; ``--workers`` is the number of worker
    processes (local) or Ray actors (default: one per CPU, or per GPU, of the cluster)."""
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (processes of this machine) or ray (a Ray cluster, or one "
                   "started here; pip install 'dreamshift[ray]')")  # fmt: skip
    p.add_argument("--ray-address", help="a running Ray cluster, e.g. auto or 10.0.0.1:6379 "
                   "(implies --executor ray; default: start Ray on this machine)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (local: 1) or Ray actors (default: the cluster's "
                   "CPUs, or GPUs for a GPU model)")  # fmt: skip


def executor_of(args: argparse.Namespace, use_gpus: bool = False) -> Any:
    """The executor the flags ask for; None: the local default."""
    if args.executor == "local" and not args.ray_address:
        return None
    from dreamshift.engine.ray_executor import RayExecutor

    return RayExecutor(args.ray_address, actors=args.workers, use_gpus=use_gpus)
