"""One small registry for everything chosen by name (classifier architectures, model sources).

Like timm's ``@register_model`` / ``create_model``: entries are added by a decorator, looked up
by name, and an unknown name fails loudly and lists the valid ones.

>>> shapes: Registry[int] = Registry("shape")
>>> _ = shapes.register("square")(4)
>>> shapes.get("square"), shapes.names()
(4, ['square'])
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from dreamshift.errors import DreamshiftError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise DreamshiftError(
                f"unknown {self.what} {name!r}: choose one of {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell pattern, sorted (``names('world-*')``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
