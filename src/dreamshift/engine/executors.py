"""Where shards run: the :class:`Executor` protocol and the two local executors.

An executor runs ``fn(state, item)`` for every item and yields the results as they finish,
in any order, where ``state = setup()`` is made once in each process that runs items (a
loaded model, say). :class:`InProcess` runs everything here; :class:`LocalPool` runs items in
worker processes. Another engine (Ray) only has to implement ``map``.

>>> list(InProcess().map(lambda: 10, lambda state, item: state + item, [1, 2]))
[11, 12]
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

from dreamshift.errors import DreamshiftError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Executor(Protocol):
    def map(
        self, setup: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T]
    ) -> Iterator[R]:
        """``fn(setup(), item)`` of every item, yielded as each finishes; ``setup`` runs once
        in each process that runs items, before its first. An exception in ``fn`` ends the
        iteration with that exception."""
        ...


class InProcess:
    """Runs every item in this process, in order."""

    def map(
        self, setup: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T]
    ) -> Iterator[R]:
        if not items:
            return
        state = setup()
        for item in items:
            yield fn(state, item)


class LocalPool:
    """Runs items in ``workers`` processes of this machine (in this process when there is
    one worker or one item: starting a process would only cost time).

    ``spawn``: start fresh interpreters, as CUDA cannot be used in a forked child. Otherwise
    workers are forked on Linux (macOS spawns: fork is unsafe there), which spares each one
    the seconds of importing torch and diffusers again. Workers end with this process, even
    when it is killed.
    """

    def __init__(self, workers: int, spawn: bool = False):
        self.workers = workers
        self.spawn = spawn

    def map(
        self, setup: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T]
    ) -> Iterator[R]:
        if self.workers <= 1 or len(items) <= 1:
            yield from InProcess().map(setup, fn, items)
            return
        fork = not self.spawn and sys.platform == "linux"
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=multiprocessing.get_context("fork" if fork else "spawn"),
            initializer=_start_worker,
            initargs=(setup, os.getpid()),
        )
        try:
            futures = [pool.submit(_call, fn, item) for item in items]
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except BrokenProcessPool as exc:
                    raise DreamshiftError(
                        "a worker process died (out of memory, killed, or its setup failed, "
                        "e.g. the model did not load in it): run with --workers 1 to see the "
                        "error; finished shards are kept"
                    ) from exc
                yield result
        finally:  # on an error, items not started are dropped; running ones finish
            pool.shutdown(wait=True, cancel_futures=True)


_state: Any = None  # in a worker process: what its setup returned


def _start_worker(setup: Callable[[], Any], parent: int) -> None:
    global _state
    die_with_parent(parent)
    _state = setup()


def _call(fn: Callable[[Any, T], R], item: T) -> R:
    return fn(_state, item)


def die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent dies, so that killing a run
    leaves no orphaned worker behind (Linux ``prctl``; elsewhere this does nothing)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
