"""Errors a user can act on. The CLI prints their message and exits with status 2."""

from typing import Any


class DreamshiftError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class BadInputError(DreamshiftError):
    """One input file (image, mask) cannot be used. A batch run records it and goes on."""


def need_extra(module: str, extra: str, what: str) -> Any:
    """``module``, imported; where it is not installed, an error saying that ``what`` needs it
    and which extra of dreamshift installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DreamshiftError(
            f"{what} needs {module}, which is not installed: pip install 'dreamshift[{extra}]'"
        ) from exc
