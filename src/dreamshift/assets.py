"""Where the weights shipped inside the package live (``dreamshift/weights/``).

>>> shipped("tiny-dream").joinpath("model_index.json").is_file()
True
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"


def shipped(name: str) -> Path:
    """``tiny-dream`` (the world's diffusion model), ``oracles``, ``classifiers``, or a file
    in the weights folder such as ``tiny-dream-record.json``."""
    return WEIGHTS / name
