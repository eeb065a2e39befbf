"""A griffe extension for the API reference: the docstrings' doctest examples (``>>>`` lines
and their output, which ``make test`` runs) are shown as Python console code blocks, not read
as Markdown (where ``>>>`` is a nested quote and ``x["a"]["b"]`` a reference link)."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out: list[str] = []
    block: list[str] = []
    indent = ""
    for line in [*text.splitlines(), ""]:
        stripped = line.lstrip()
        if stripped.startswith(">>>") and not block:
            indent = line[: len(line) - len(stripped)]
        if stripped.startswith(">>>") or (block and stripped):
            block.append(line[len(indent) :] if line.startswith(indent) else stripped)
            continue
        if block:
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
            block = []
        out.append(line)
    return "\n".join(out[:-1])


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **_: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
