"""Several training processes (GPUs, nodes) through accelerate.

A run started by ``accelerate launch`` (or ``torchrun``) finds its process group in the
environment; :func:`processes` joins it through accelerate's ``PartialState`` (NCCL on CUDA,
gloo on CPU) and returns what a training loop needs: this process's rank and device, whether
it is the main process (the only one that writes), gradient averaging, sums over processes,
and :meth:`Processes.agree`, which refuses processes that disagree on their dataset or config
before the first step. Without a launcher it is one process and every collective is a no-op.

The learning algorithms take several backward passes per update (D3S's estimators, IRM's
penalty gradient), which DDP's forward-hook reducer does not follow; so gradients are averaged
explicitly, one flattened all-reduce per optimiser step (what DDP's buckets do), and the
weights stay identical on every process: same initialisation (seeded), same averaged
gradients, same optimiser. After every update the processes take the main process's buffers
(batch norm statistics; what GroupDRO and MINE keep), as DDP broadcasts them.

>>> one = processes()
>>> one.size, one.rank, one.is_main
(1, 0, True)
>>> one.agree("dataset abc", "dataset")  # nothing to compare with
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from dreamshift.errors import DreamshiftError

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")  # set by accelerate launch / torchrun


@dataclass(frozen=True)
class Processes:
    """The processes of a run: ``size`` of them, this one ``rank`` on ``device``."""

    size: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the processes (a parameter with
        no gradient on any process keeps none; one missing on some counts as zeros there)."""
        if self.size == 1:
            return
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        present = [float(p.grad is not None) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_tensor(present)])
        torch.distributed.all_reduce(flat)
        start = 0
        for p in params:
            n = p.numel()
            grad = flat[start : start + n].view_as(p).div_(self.size)
            start += n
            p.grad = grad.clone()
        for p, count in zip(params, flat[start:].tolist(), strict=True):
            if count == 0:
                p.grad = None

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Every process takes the main process's floating buffers (batch norm statistics,
        GroupDRO's group weights, MINE's moving average), as DDP does before each forward:
        the processes then hold one state, whatever is checkpointed when."""
        if self.size == 1:
            return
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.reshape(-1).to(buffers[0].dtype) for b in buffers])
        torch.distributed.broadcast(flat, src=0)
        start = 0
        for b in buffers:
            b.copy_(flat[start : start + b.numel()].view_as(b))
            start += b.numel()

    def gather(self, values: torch.Tensor) -> list[torch.Tensor]:
        """``values`` of every process (each may have another length), in rank order."""
        if self.size == 1:
            return [values]
        out: list[torch.Tensor | None] = [None] * self.size
        torch.distributed.all_gather_object(out, values.cpu())
        return [t for t in out if t is not None]

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the processes (the same keys on every process)."""
        if self.size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def first_error(self, message: str) -> str:
        """The first non-empty ``message`` of the processes, in rank order ('' when none has
        one): a bad input met by one process stops every process with its words, instead of
        leaving the others waiting in the next collective."""
        if self.size == 1 or not self.sum({"errors": float(bool(message))})["errors"]:
            return message
        messages: list[str | None] = [None] * self.size
        torch.distributed.all_gather_object(messages, message)
        return next(m for m in messages if m)

    def agree(self, value: str, what: str) -> None:
        """Raise on every process unless all of them hold the same ``value`` (a hash of their
        dataset, their config, their checkpoint)."""
        if self.size == 1:
            return
        values: list[str | None] = [None] * self.size
        torch.distributed.all_gather_object(values, value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise DreamshiftError(
                f"the {self.size} processes disagree on their {what}: process 0 has "
                f"{values[0]!r}, process {differ[0]} {values[differ[0]]!r}. Launch every "
                "process with the same command line, on the same files (a shared filesystem "
                "across nodes)"
            )


def launched() -> bool:
    """Whether this process was started by ``accelerate launch`` or ``torchrun``."""
    return all(v in os.environ for v in LAUNCH_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def processes(cpu: bool = False) -> Processes:
    """This process's place in the run: joins the process group that ``accelerate launch``
    set up (gloo on CPU, NCCL on CUDA) through accelerate's ``PartialState``; without a
    launcher, one process on CUDA when there is one (``cpu``: on the CPU)."""
    if not launched():
        cuda = torch.cuda.is_available() and not cpu
        return Processes(1, 0, torch.device("cuda" if cuda else "cpu"))
    from accelerate import PartialState

    state = PartialState(cpu=cpu or not torch.cuda.is_available())
    device = torch.device(state.device)
    if device.type == "cpu":
        device = torch.device("cpu")  # accelerate says cpu:0 on CPU; tensors say cpu
    return Processes(state.num_processes, state.process_index, device)
