"""Training state on disk without pickle: one ``.safetensors`` file whose header holds the JSON
structure (numbers, strings, nesting, dict keys) and whose body holds every tensor.

``torch.load`` of a pickle can execute code hidden in the file, so a run folder someone shared
could run anything when opened. A state saved here is read back by parsing JSON and tensors
only. The ``checkpoint.pt`` of a finished learn run of an earlier version is read with
``weights_only=True``, and a pickle that needs more is refused; an unfinished run of an earlier
version starts again.

>>> import tempfile, torch
>>> path = Path(tempfile.mkdtemp()) / "state.safetensors"
>>> save_state(path, {"step": 3, "w": torch.ones(2), "opt": {0: {"betas": (0.9, 0.99)}}})
>>> state = load_state(path)
>>> state["step"], state["w"].tolist(), state["opt"][0]["betas"]
(3, [1.0, 1.0], (0.9, 0.99))
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dreamshift.errors import DreamshiftError

_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone()  # own storage: safetensors refuses shared
        return {_TENSOR: key}
    if isinstance(obj, dict):  # keys may be ints (optimizer state): kept as [key, value] pairs
        return {_DICT: [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_decode(v, tensors) for v in obj[_TUPLE])
        return {k: _decode(v, tensors) for k, v in obj[_DICT]}
    return obj


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts, lists, tuples, numbers, strings and tensors) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = json.dumps(_encode(state, tensors))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"dreamshift_state": structure})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    """A state written by :func:`save_state`; a legacy ``.pt`` file only through
    ``torch.load(weights_only=True)``. Anything else is refused with a clear error."""
    if path.suffix == ".pt":
        return _load_legacy(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            structure = (f.metadata() or {}).get("dreamshift_state")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise DreamshiftError(
            f"{path} is not a dreamshift checkpoint (not a readable safetensors file: {exc}); "
            "delete it to start that run again"
        ) from exc
    if structure is None:
        raise DreamshiftError(f"{path} holds tensors but no dreamshift training state")
    with damaged(path):
        state = _decode(json.loads(structure), tensors)
        if not isinstance(state, dict):
            raise TypeError(f"the state is a {type(state).__name__}, not a mapping")
    return state


@contextmanager
def damaged(path: Path) -> Iterator[None]:
    """Turn what a well-formed file with a damaged training state raises while it is read or
    restored (a missing key, a value of the wrong type or shape) into one clear error."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            RuntimeError) as exc:  # fmt: skip
        raise DreamshiftError(
            f"{path} holds a damaged training state ({type(exc).__name__}: {exc}); delete it "
            "to start that run again"
        ) from exc


def _load_legacy(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
        if "allowed global" in str(exc):  # the pickle names a function or class to call
            raise DreamshiftError(
                f"{path} is a pickle that holds more than tensors and plain values; loading it "
                "could run code hidden in it, so dreamshift refuses it. Delete the file (the run "
                "then starts again) or use a run folder you made yourself"
            ) from exc
        raise DreamshiftError(
            f"{path} cannot be read as a checkpoint (damaged, or not a checkpoint); delete it "
            "to start that run again"
        ) from exc
    return state
