"""The kinds of output folder that one stage writes and others load by path, each named by a
marker file in the folder (``dreamshift-folder.json``), so a reader knows what it was given
without guessing from the files inside:

- ``learn-run``: a ``dreamshift learn`` run; ``audit --model`` and ``probe`` load it as a
  classifier;
- ``tune-run``: a ``dreamshift tune`` run; ``dream --adapter`` loads its LoRA adapters, or
  ``dream --model`` its DreamBooth model.

A folder written before the marker existed has none (:func:`folder_kind` returns None): its
reader then recognises it by its files, as it did before.

>>> import tempfile
>>> run = Path(tempfile.mkdtemp())
>>> mark_folder(run, "learn-run")
>>> folder_kind(run)
'learn-run'
"""

from __future__ import annotations

import json
from pathlib import Path

from dreamshift.errors import DreamshiftError

KIND_FILE = "dreamshift-folder.json"
FOLDER_KINDS = {
    "learn-run": "a `dreamshift learn` run (a classifier: audit --model, probe)",
    "tune-run": "a `dreamshift tune` run (LoRA adapters: dream --adapter; a DreamBooth model: "
    "dream --model)",
}


def mark_folder(folder: Path, kind: str) -> None:
    """Write ``folder``'s kind marker (the folder exists)."""
    if not isinstance(kind, str) or kind not in FOLDER_KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    from dreamshift import __version__

    text = json.dumps({"kind": kind, "dreamshift_version": __version__}, indent=2) + "\n"
    (Path(folder) / KIND_FILE).write_text(text)


def folder_kind(folder: Path) -> str | None:
    """The kind ``folder``'s marker names; None where it has no marker (written before there
    were markers, or not by dreamshift). A damaged marker or an unknown kind is an error."""
    path = Path(folder) / KIND_FILE
    if not path.is_file():
        return None
    try:
        kind = json.loads(path.read_text()).get("kind")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise DreamshiftError(
            f"{path} is damaged ({exc}): it should say which dreamshift output this folder is"
        ) from exc
    if not isinstance(kind, str) or kind not in FOLDER_KINDS:
        raise DreamshiftError(
            f"{path} names the folder kind {kind!r}, which this dreamshift does not know (it "
            f"knows {', '.join(FOLDER_KINDS)}): a newer dreamshift wrote it, or it is damaged"
        )
    return str(kind)


def describe(kind: str) -> str:
    """What a folder of ``kind`` is and which commands take it."""
    return FOLDER_KINDS[kind]
