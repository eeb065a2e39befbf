"""Argument types and small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys


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
