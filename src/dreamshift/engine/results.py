"""``results.jsonl``: one JSON record per line, appended under an exclusive file lock so that
runs writing to the same file at once (a sweep over several processes, DomainBed-style)
never interleave their lines.

Records travel (to a colleague, a paper's supplement, another node): the paths they hold
(datasets, run folders, prediction files) are written relative to the records file's folder
(:mod:`dreamshift.portable`), beside the content hashes that identify what they name, and
read back as paths on this machine (:func:`read_records`).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "results.jsonl"
>>> append_record(path, {"run": "a", "acc": 0.5})
>>> append_records(path, [{"run": "b"}, {"run": "c"}])
>>> [r["run"] for r in read_records(path)]
['a', 'b', 'c']
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamshift.errors import DreamshiftError
from dreamshift.portable import located_record, portable_record

RESULTS = "results.jsonl"


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append ``records`` as one locked, flushed write (whole lines, never interleaved), their
    paths relative to the file's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(portable_record(r, path.parent)) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_record(path: Path, record: dict[str, Any]) -> None:
    append_records(path, [record])


def read_records(path: str | Path, what: str = "`dreamshift audit`") -> list[dict[str, Any]]:
    """Every record of a ``results.jsonl``, its paths found from the file's folder; a missing
    file or a line that is not JSON is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DreamshiftError(f"no results file {path}: run {what} first")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DreamshiftError(f"{path} line {n} is not JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise DreamshiftError(f"{path} line {n} is not a record (a JSON object)")
            records.append(located_record(record, path.parent))
    return records
