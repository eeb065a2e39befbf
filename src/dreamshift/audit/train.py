"""``dreamshift train-classifier``: empirical risk minimisation (ERM; Vapnik 1998) of a world
classifier on a dataset's training split, as the classifiers D3S audits were trained on real,
background-correlated data.

The run is reproducible and resumable: the data order and augmentation of epoch ``e`` come from
``derive_seed(seed, "epoch", e)``, a checkpoint (model, optimiser, schedule, history) is written
after every epoch, and a relaunched run continues from it to the same weights as an
uninterrupted one. The output folder holds ``classifier.json`` (architecture, classes,
preprocessing, config, per-epoch history) and ``model.safetensors``: load it with
``dreamshift audit DATASET --model FOLDER``.

>>> train_classifier("out/world", "out/cnn", TrainConfig(arch="world-cnn"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamshift import dataset as ds
from dreamshift.audit.classifiers import (
    ARCHITECTURES,
    WORLD_MEAN,
    WORLD_STD,
    save_checkpoint,
)
from dreamshift.audit.evaluate import iter_batches, usable_rows
from dreamshift.errors import DreamshiftError
from dreamshift.seeding import derive_seed

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "world-cnn"
    split: str = "train"
    val_split: str = "val"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    input_size: int = 64
    seed: int = 0
    bf16: bool = False  # bfloat16 autocast: only where the CPU has native bf16 (AMX)
    half_weights: bool = False  # store float16 weights (half the file size)

    def check(self) -> None:
        ARCHITECTURES.get(self.arch)
        for name in ("epochs", "batch_size", "input_size"):
            if getattr(self, name) < 1:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise DreamshiftError(f"lr = {self.lr} must be > 0")


def load_split(
    root: Path, split: str, classes: list[str], backgrounds: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, H, W, 3) uint8, class index (N,), background index (N,)) of the usable rows
    of one split, in memory."""
    rows = usable_rows(ds.read_manifest(root).to_pylist(), split)
    if not rows:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros((0, 1, 1, 3), dtype=torch.uint8), empty, empty
    images = []
    for _, batch, bad in iter_batches(root, rows, 256):
        if bad:
            raise DreamshiftError(f"{bad[0][1]}: re-run the command that made {root}")
        assert batch is not None
        images.append(torch.from_numpy(batch))
    labels = torch.tensor([classes.index(r["fg_class"]) for r in rows])
    bg = torch.tensor([backgrounds.index(r["bg_class"]) for r in rows])
    return torch.cat(images), labels, bg


def to_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, size, size) float in [-1, 1] (the world preprocessing)."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop with 4-pixel zero padding, per image."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=g)
    dx = torch.randint(0, 9, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, 3, h, w + 8)
    x = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, 3, h, w)
    return x.gather(3, cols)


@torch.inference_mode()
def accuracy_of(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), 256):
        correct += int(
            (net(to_input(images[i : i + 256], size)).argmax(1) == labels[i : i + 256]).sum()
        )
    return correct / max(1, len(images))


def train_classifier(
    dataset: str | Path, out: str | Path, cfg: TrainConfig, log: Any = print
) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``dataset``'s ``cfg.split``; returns the ``classifier.json``
    record. Relaunching continues from the last finished epoch."""
    cfg.check()
    root, out = Path(dataset), Path(out)
    meta = ds.read_dataset_json(root)
    classes = list(meta["classes"])
    run = {"config": asdict(cfg), "dataset": str(root), "dataset_hash": meta.get("content_hash")}
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if run_file.exists() and json.loads(run_file.read_text()) != run:
        raise DreamshiftError(
            f"{out} holds a run with another config or dataset ({run_file}): choose a new --out"
        )
    run_file.write_text(json.dumps(run, indent=2) + "\n")

    backgrounds = list(meta["backgrounds"])
    x, y, _ = load_split(root, cfg.split, classes, backgrounds)
    if len(x) == 0:
        raise DreamshiftError(f"{root} has no usable images in split {cfg.split!r}")
    x_val, y_val, _ = load_split(root, cfg.val_split, classes, backgrounds)

    torch.manual_seed(derive_seed(cfg.seed, "init", cfg.arch))
    net = ARCHITECTURES.get(cfg.arch)(len(classes))
    steps_per_epoch = max(1, len(x) // cfg.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )
    history: list[dict[str, Any]] = []
    ckpt = out / CHECKPOINT
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        history = json.loads(state["history"])
        log(f"resuming {out} after epoch {len(history)}")

    for epoch in range(len(history), cfg.epochs):
        net.train()
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "epoch", epoch))
        order = torch.randperm(len(x), generator=g)
        start, total = time.perf_counter(), 0.0
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            inputs = augment(to_input(x[idx], cfg.input_size), g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = net(inputs)
            loss = nn.functional.cross_entropy(logits.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        seconds = time.perf_counter() - start
        entry = {
            "epoch": epoch + 1,
            "loss": round(total / steps_per_epoch, 5),
            "train_images_per_s": round(steps_per_epoch * cfg.batch_size / seconds, 1),
            "val_acc": round(accuracy_of(net, x_val, y_val, cfg.input_size), 5)
            if len(x_val)
            else None,
        }
        history.append(entry)
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "schedule": sched.state_dict(),
                "history": json.dumps(history),
            },
            tmp,
        )
        tmp.replace(ckpt)
        log(
            f"{cfg.arch} epoch {entry['epoch']}/{cfg.epochs}: loss {entry['loss']:.4f}, "
            f"val acc {entry['val_acc']}, {entry['train_images_per_s']} img/s"
        )

    record = {
        "name": cfg.arch if out.name == cfg.arch else out.name,
        "architecture": cfg.arch,
        "classes": classes,
        "input_size": cfg.input_size,
        "mean": list(WORLD_MEAN),
        "std": list(WORLD_STD),
        "parameters": sum(p.numel() for p in net.parameters()),
        "trained_on": run,
        "dataset_config": meta.get("config"),  # what made the training data: enough to remake it
        "history": history,
    }
    save_checkpoint(out, net, record, half=cfg.half_weights)
    return record
