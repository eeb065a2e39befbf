"""The resumable training loops: :func:`fit_stream` by epochs over a streaming loader, on one
or several processes (``learn``); :func:`fit` by epochs over tensors in memory
(the oracles) and :func:`fit_steps` by steps (tiny-dream's VAE, decoder
and UNet stages).

Each epoch draws its data order from a ``torch.Generator`` that the caller seeds per epoch
(``derive_seed(seed, "epoch", e)``), runs ``update(step, batch_indices, generator)`` on every
full batch, logs the mean of what the updates return, and writes one checkpoint
(:mod:`dreamshift.train.checkpoint`: safetensors, no pickle) holding the caller's state and
the history. A relaunch loads it and continues with the next epoch, so a resumed run ends with
the same weights as an uninterrupted one.

>>> import torch
>>> w = torch.zeros(1, requires_grad=True)
>>> opt = torch.optim.SGD([w], lr=0.5)
>>> def update(step, idx, g):
...     loss = (w - 1.0).pow(2).sum()
...     opt.zero_grad(); loss.backward(); opt.step()
...     return {"loss": loss.item()}
>>> history = fit(
...     "toy", 8, 4, 2, update, lambda e: torch.Generator().manual_seed(e),
...     TrainState(w=w, opt=opt), log=lambda line: None,
... )
>>> [h["epoch"] for h in history], round(w.item(), 4)
([1, 2], 1.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dreamshift.data.torch_dataset import BadImage, EpochBatches, Images
from dreamshift.errors import BadInputError, DreamshiftError
from dreamshift.seeding import derive_seed
from dreamshift.train.checkpoint import damaged, load_state, save_state
from dreamshift.train.distributed import Processes

Update = Callable[[int, torch.Tensor, torch.Generator], dict[str, float]]


class TrainState:
    """The objects a checkpoint holds, by name: modules, optimizers and schedulers (anything
    with ``state_dict``/``load_state_dict``), tensors or lists of tensors (an EMA copy of the
    weights; copied in place on load). A part may also be a function that returns the object,
    for one that is replaced during training (an optimizer restarted after an anneal)."""

    def __init__(self, **parts: Any):
        self.parts = {k: v for k, v in parts.items() if v is not None}

    def _current(self) -> dict[str, Any]:
        out = {}
        for k, v in self.parts.items():
            is_getter = callable(v) and not hasattr(v, "state_dict")
            out[k] = v() if is_getter else v
        return {k: v for k, v in out.items() if v is not None}

    def state_dict(self) -> dict[str, Any]:
        return {k: _snapshot(v) for k, v in self._current().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._current().items():
            if isinstance(v, torch.Tensor | list):
                with torch.no_grad():
                    for mine, saved in zip(_tensors(v), _tensors(state[k]), strict=True):
                        mine.copy_(saved)
            else:
                v.load_state_dict(state[k])


def _tensors(v: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return v if isinstance(v, list) else [v]


def _snapshot(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, list):
        return [t.detach().clone() for t in v]
    return v.state_dict()


def descend(loss: torch.Tensor, optimizer: Any, schedule: Any = None) -> dict[str, float]:
    """One gradient step on ``loss`` (then one step of the learning-rate ``schedule``); returns
    ``{"loss": value}`` for the history."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return {"loss": loss.item()}


def fit(
    name: str,
    num_examples: int,
    batch_size: int,
    epochs: int,
    update: Update,
    epoch_generator: Callable[[int], torch.Generator],
    state: TrainState,
    checkpoint: Path | None = None,
    evaluate: Callable[[], dict[str, Any]] | None = None,
    log: Callable[[str], Any] = print,
    sampling_weights: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Train for ``epochs`` epochs of ``num_examples // batch_size`` updates (at least one);
    returns the per-epoch history (mean of each value ``update`` returns, images/s, and what
    ``evaluate`` returns). With ``checkpoint``, resume from it and write it after each epoch.
    An epoch visits the examples in a random order; with ``sampling_weights`` (one per
    example) it draws ``num_examples`` of them with replacement in proportion to the weights."""
    history: list[dict[str, Any]] = []
    if checkpoint is not None and checkpoint.is_file():
        saved = load_state(checkpoint)
        with damaged(checkpoint):
            state.load_state_dict(saved["state"])
            history = list(saved["history"])
        log(f"resuming {checkpoint.parent} after epoch {len(history)}")
    steps = max(1, num_examples // batch_size)
    for epoch in range(len(history), epochs):
        g = epoch_generator(epoch)
        order = (
            torch.randperm(num_examples, generator=g)
            if sampling_weights is None
            else torch.multinomial(sampling_weights, num_examples, replacement=True, generator=g)
        )
        start, sums = time.perf_counter(), dict[str, float]()
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            for k, v in update(epoch * steps + s, idx, g).items():
                sums[k] = sums.get(k, 0.0) + v
        seconds = time.perf_counter() - start
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            **{k: round(v / steps, 5) for k, v in sums.items()},
            "train_images_per_s": round(steps * batch_size / seconds, 1),
        }
        if evaluate is not None:
            entry.update(evaluate())
        history.append(entry)
        if checkpoint is not None:
            save_state(checkpoint, {"state": state.state_dict(), "history": history})
        log(
            f"{name} epoch {epoch + 1}/{epochs}: "
            + ", ".join(f"{k} {v}" for k, v in entry.items() if k != "epoch")
        )
    return history


def fit_stream(
    name: str,
    epochs: int,
    batches: EpochBatches,
    data: torch.utils.data.DataLoader,
    update: Callable[[int, Images], dict[str, float]],
    start_epoch: Callable[[int], None],
    state: TrainState,
    procs: Processes,
    checkpoint: Path | None = None,
    checkpoint_every: int = 0,
    log: Callable[[str], Any] = print,
    end_epoch: Callable[[int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train for ``epochs`` epochs of ``batches.steps`` steps: ``update(global step, batch)``
    on every batch ``data`` yields (a DataLoader drawing from ``batches``, whose epoch this
    loop sets), on every process of ``procs``. ``start_epoch(e)`` seeds what the update draws
    from the global RNG. Returns the per-epoch history: the mean over steps and processes of
    what ``update`` returns, the images/s of all processes together and what
    ``end_epoch(e)`` returns (validation accuracy; called on every process, before the
    checkpoint).

    With ``checkpoint``, the main process writes the state, the history and where it stands
    after every epoch (and every ``checkpoint_every`` steps); every process resumes from it,
    mid-epoch included (the global RNG state is in the checkpoint), so a relaunched run ends
    with the weights of an uninterrupted one with the same number of processes (``update``
    keeps the processes' buffers alike: what the main process saves is every process's
    state). A missing or changed image stops the run with one line naming it."""
    history: list[dict[str, Any]] = []
    epoch, step, sums = 0, 0, dict[str, float]()
    if checkpoint is not None and checkpoint.is_file():
        saved = _load_for(checkpoint, procs.size)
        with damaged(checkpoint):
            state.load_state_dict(saved["state"])
            history = list(saved["history"])
            epoch, step = len(history), int(saved.get("step", 0))
            sums = dict(saved.get("sums", {}))
            if step:  # mid-epoch: the random state the updates had reached (the same on all)
                torch.set_rng_state(saved["rng"])
                if saved.get("cuda_rng") is not None and procs.device.type == "cuda":
                    torch.cuda.set_rng_state(saved["cuda_rng"], procs.device)
        if procs.is_main:
            log(f"resuming {checkpoint.parent} at epoch {epoch + 1}, step {step}")
    procs.agree(f"epoch {epoch} step {step}", "checkpoint (resume point)")

    def save(step_done: int) -> None:
        """The state after ``step_done`` steps of the current epoch (0: the epoch is done)."""
        shared = {k: v / procs.size for k, v in procs.sum(sums).items()}  # each resumes it
        if procs.is_main and checkpoint is not None:
            save_state(checkpoint, {
                "state": state.state_dict(), "history": history, "processes": procs.size,
                "step": step_done, "sums": shared, "rng": torch.get_rng_state(),
                "cuda_rng": _cuda_rng(procs.device),
            })  # fmt: skip

    for e in range(epoch, epochs):
        if step == 0:
            start_epoch(e)
            sums = {}
        batches.set_epoch(e, step)
        start = time.perf_counter()
        done_before = step
        for batch in data:
            error = procs.first_error(batch.message if isinstance(batch, BadImage) else "")
            if error:
                raise BadInputError(error)
            batch = Images(*(t.to(procs.device, non_blocking=True) for t in batch))
            for k, v in update(e * batches.steps + step, batch).items():
                sums[k] = sums.get(k, 0.0) + v
            step += 1
            if checkpoint_every and step % checkpoint_every == 0 and step < batches.steps:
                save(step)
        seconds = time.perf_counter() - start
        totals = procs.sum(sums)
        images = (step - done_before) * batches.batch_size * procs.size
        entry: dict[str, Any] = {
            "epoch": e + 1,
            **{k: round(v / (batches.steps * procs.size), 5) for k, v in totals.items()},
            "train_images_per_s": round(images / seconds, 1),
            **(end_epoch(e) if end_epoch is not None else {}),
        }
        history.append(entry)
        step, sums = 0, {}
        save(0)
        if procs.is_main:
            log(
                f"{name} epoch {e + 1}/{epochs}: "
                + ", ".join(f"{k} {v}" for k, v in entry.items() if k != "epoch")
            )
    procs.barrier()
    return history


def _load_for(checkpoint: Path, processes: int) -> dict[str, Any]:
    """A checkpoint to resume on ``processes`` processes: one written on another number is
    refused, since the global batch, and so the weights, would change."""
    saved = load_state(checkpoint)
    written_by = saved.get("processes", 1)  # checkpoints of earlier versions: one process
    if written_by != processes:
        raise DreamshiftError(
            f"{checkpoint} was written by a run on {written_by} processes; this one has "
            f"{processes}, which changes the batches and the weights: relaunch it on "
            f"{written_by}, or delete the checkpoint to start again"
        )
    return saved


def _cuda_rng(device: torch.device) -> torch.Tensor | None:
    """The CUDA generator's state of ``device`` (dropout and drop-path masks), or None."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def fit_steps(
    name: str,
    total: int,
    step_fn: Callable[[int, torch.Generator], float],
    seed: int,
    state: TrainState,
    checkpoint: Path,
    every: int,
    progress: bool = True,
    stop_after: int | None = None,
    metric: str = "loss",
    procs: Processes | None = None,
) -> tuple[int, list[float]]:
    """Run ``step_fn(step, generator)`` (it returns the value to log) up to ``total`` steps, or
    ``stop_after``. Step ``s`` draws from a generator seeded by ``(seed, name, s)``, so a
    resumed run computes exactly what an uninterrupted one does. ``state`` and the logged
    values are checkpointed every ``every`` steps and at the end; a relaunch resumes from the
    checkpoint. Returns (steps done, logged values)."""
    from tqdm import tqdm

    step, values = 0, []
    size = procs.size if procs is not None else 1
    if checkpoint.is_file():
        saved = _load_for(checkpoint, size)
        with damaged(checkpoint):
            state.load_state_dict(saved["state"])
            step, values = int(saved["step"]), list(saved["values"])
    main = procs is None or procs.is_main
    if procs is not None:
        procs.agree(f"step {step}", "checkpoint (resume point)")
    bar = tqdm(total=total, initial=step, desc=name, disable=not (progress and main), unit="step")
    while step < total and (stop_after is None or step < stop_after):
        g = torch.Generator().manual_seed(derive_seed(seed, name, step))
        values.append(step_fn(step, g))
        step += 1
        bar.update(1)
        bar.set_postfix({metric: f"{sum(values[-50:]) / len(values[-50:]):.4f}"})
        if main and (step % every == 0 or step == total):
            save_state(checkpoint, {"state": state.state_dict(), "step": step, "values": values,
                                    "processes": size})  # fmt: skip
    bar.close()
    return step, values
