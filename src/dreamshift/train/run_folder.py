"""The names of the files in a training run's folder, written by the stage that trains it
(``learn``; earlier also ``train-classifier``) and read by others (audit, report) through
these names, and the sweep file that lists a family of runs (ImageNet-G's study).

>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> add_sweep_members(out, [{"folder": "erm-1", "mix": "real", "train_size": 6}])
>>> [m["mix"] for m in sweep_members(out)]
['real']
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamshift.errors import DreamshiftError

CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"  # :mod:`dreamshift.train.checkpoint`, one per epoch
DONE = "done"  # written last: the run is finished
PROBES = "probes.jsonl"  # a learn run: one record per `dreamshift probe`
SWEEP = "sweep.json"  # a folder of runs trained as one family: {"members": [...]}
# a sweep's mixes (ImageNet-G) -> which training sources each uses (data.loading.KINDS)
SWEEP_MIXES = {"real": "real", "generated": "generated", "real+generated": "all"}


def check_sweep(sizes: Sequence[int], mixes: Sequence[str]) -> None:
    """Refuse a sweep of unknown mixes or sizes that are not positive."""
    unknown = [m for m in mixes if m not in SWEEP_MIXES]
    if unknown or not mixes or not sizes or min(sizes) < 1:
        raise DreamshiftError(
            f"--mixes {','.join(mixes)} --train-sizes {','.join(map(str, sizes))}: mixes are "
            f"{', '.join(SWEEP_MIXES)}; sizes positive integers"
        )


def sweep_members(folder: Path) -> list[dict[str, Any]] | None:
    """The runs of a sweep folder (``folder`` as a path, ``mix``, ``train_size``), or None."""
    path = Path(folder) / SWEEP
    if not path.is_file():
        return None
    members = json.loads(path.read_text())["members"]
    return [{**m, "folder": str(Path(folder) / m["folder"])} for m in members]


def add_sweep_members(folder: Path, members: list[dict[str, Any]]) -> None:
    """List ``members`` (``folder`` relative to ``folder``) in its sweep file, after those
    already there; written whole, so a failed sweep leaves the list as it was."""
    path = Path(folder) / SWEEP
    done = json.loads(path.read_text())["members"] if path.is_file() else []
    done += [m for m in members if m not in done]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"members": done}, indent=2) + "\n")
    os.replace(tmp, path)
