"""``--executor ray``: shards as tasks of Ray actors, on one machine or a cluster.

Each actor runs ``setup()`` once (a loaded pipeline, say) and then one shard at a time; the
driver keeps every actor busy with the next shard as soon as one finishes. When an actor's
worker or node dies, its shards go back to the queue and the other actors redo them (a new
actor is started only when none is left: a restarted one could wait forever for a CPU the
survivors hold). A shard is marked done only once it is written whole, so what lands on disk
is what the local executor writes. Every
node must see the output folder at the same path (a shared filesystem on a real cluster).

``ray`` is an extra (``pip install 'dreamshift[ray]'``), imported when this executor runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from dreamshift.data.images import MAX_PIXELS_ENV
from dreamshift.errors import DreamshiftError

PASSED_ENV = (MAX_PIXELS_ENV,)  # set by the command line for its processes, actors included

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT = 2  # shards queued per actor: the next one is there when the current one ends


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise DreamshiftError("--executor ray needs Ray: pip install 'dreamshift[ray]'") from exc
    return ray


class _Worker:
    """The actor: holds what ``setup`` returned, runs ``fn`` on one item at a time."""

    def __init__(self, setup: Callable[[], Any]):
        self.state = setup()

    def run(self, fn: Callable[[Any, Any], Any], item: Any) -> Any:
        return fn(self.state, item)


def refused_token(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it came from says the cluster refused our auth token
    (Ray >= 2.52's token authentication, on by default for clusters in later releases: the
    error comes wrapped in a ConnectionError that only names the address).

    >>> cause = RuntimeError("Failed to connect to GCS: RPC error: InvalidAuthToken: ...")
    >>> try:
    ...     raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    ... except ConnectionError as exc:
    ...     refused_token(exc), refused_token(cause.__class__("timed out"))
    (True, False)
    """
    seen = 0
    while exc is not None and seen < 10:
        if "InvalidAuthToken" in str(exc) or type(exc).__name__ == "AuthenticationError":
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class RayExecutor:
    """Runs items on ``actors`` Ray actors (default: one per CPU of the cluster; with
    ``use_gpus``, one per GPU with ``num_gpus=1`` each when the cluster has GPUs).
    ``address``: a running cluster (``ray start --head``; "auto" finds the local one); none: a
    Ray instance started here for the run."""

    def __init__(self, address: str | None = None, actors: int | None = None,
                 use_gpus: bool = False):  # fmt: skip
        self.address = address
        self.actors = actors
        self.use_gpus = use_gpus
        self.cpus_per_actor = 1.0
        self.gpus_per_actor = 0.0

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address or None, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)  # fmt: skip
        except (ConnectionError, RuntimeError) as exc:
            if refused_token(exc):
                raise DreamshiftError(
                    f"the Ray cluster at {self.address!r} refused this process's auth token "
                    "(Ray's token authentication): give every node and this driver the "
                    "cluster's token, e.g. RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the output of "
                    "`ray get-auth-token` on the head node>, or copy the head's "
                    "~/.ray/auth_token here"
                ) from exc
            if not isinstance(exc, ConnectionError):
                raise
            raise DreamshiftError(
                f"cannot reach the Ray cluster at {self.address!r} ({exc}): start one with "
                "`ray start --head` or drop --ray-address to run on this machine"
            ) from exc

    def _count(self, ray: Any, items: int) -> int:
        """Actors to start: as asked, but never more than the cluster can place (an actor
        that waits for a CPU would hold its queued shards forever) nor than items."""
        resources = ray.cluster_resources()
        if self.gpus_per_actor > 0:
            fit = resources.get("GPU", 0) / self.gpus_per_actor
        else:
            fit = resources.get("CPU", 1) / self.cpus_per_actor
        return max(1, min(self.actors or int(fit), int(fit), items))

    def map(
        self, setup: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T]
    ) -> Iterator[R]:
        if not items:
            return
        ray = import_ray()
        self._connect(ray)
        if self.use_gpus and ray.cluster_resources().get("GPU", 0) >= 1:
            self.gpus_per_actor = 1.0  # one pipeline per GPU
        # what the command's flags set for its processes (--max-pixels) reaches the actors too
        passed = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
        runtime_env = {"env_vars": passed} if passed else None
        worker = ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor,
                            runtime_env=runtime_env)(_Worker)  # fmt: skip
        # serialised once into the object store, not once per actor or per shard
        setup_ref, fn_ref = ray.put(setup), ray.put(fn)
        alive = [worker.remote(setup_ref) for _ in range(self._count(ray, len(items)))]
        started = len(alive)
        queue = list(items)[::-1]
        holding: dict[Any, tuple[Any, T]] = {}  # object ref -> (its actor, its item)

        def submit(actor: Any) -> None:
            if queue:
                item = queue.pop()
                holding[actor.run.remote(fn_ref, item)] = (actor, item)

        def least_busy() -> Any:
            load = {id(a): 0 for a in alive}
            for a, _ in holding.values():
                load[id(a)] = load.get(id(a), 0) + 1
            return min(alive, key=lambda a: load[id(a)])

        try:
            for actor in alive:
                for _ in range(IN_FLIGHT):
                    submit(actor)
            while holding:
                (ref,), _ = ray.wait(list(holding), num_returns=1)
                actor, item = holding.pop(ref)
                try:
                    result = ray.get(ref)  # an error in fn ends the run with it
                except ray.exceptions.RayActorError as exc:  # its worker or node is gone
                    queue.append(item)  # redone by another actor
                    if actor in alive:
                        alive.remove(actor)
                        ray.kill(actor)
                    if not alive:  # the last one: start another wherever there is room
                        if started >= 3 * self._count(ray, len(items)) + 3:
                            raise DreamshiftError(
                                "the Ray workers keep dying (out of memory, or their setup "
                                f"fails, e.g. the model does not load: {exc}); finished "
                                "shards are kept"
                            ) from exc
                        alive.append(worker.remote(setup_ref))
                        started += 1
                    submit(least_busy())
                    continue
                submit(actor)
                yield result
        finally:  # on an error, queued shards are dropped; the run resumes from its markers
            for actor in alive:
                ray.kill(actor)
