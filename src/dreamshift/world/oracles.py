"""Oracles: classifiers that name the foreground class and the background of a world image.

They stand in for the human label check of D3S (Kattakinda et al. 2022, Sec. 4: annotators
confirmed that generated images show their class and background) and measure the *label
fidelity* of dreamed images. Each is a small CNN trained on clean world renders (every class on
every background, random appearance, scale and placement; see
:func:`dreamshift.world.tiny_dream.render_world`) and tested on renders of silhouettes it never
saw (the world's test split). The foreground is carried by shape alone (colour and texture are
random), so the fg oracle trains on colour-permuted, flipped and shifted copies.

>>> accuracy = train_oracles("out/oracles")  # doctest: +SKIP
>>> load_oracle("fg").predict(images)  # (N, H, W, 3) uint8 -> class names  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.errors import DreamshiftError
from dreamshift.seeding import derive_seed
from dreamshift.world.animals import CLASSES
from dreamshift.world.backgrounds import BACKGROUNDS

NAMES = {"fg": CLASSES, "bg": BACKGROUNDS}
INPUT = 32  # the oracles see images resized to 32x32


def _net(n_classes: int) -> Any:
    """Four conv-BN-ReLU-maxpool stages (32-64-128-128 channels), global average pooling and a
    linear head: about 240 k parameters, input (B, 3, 32, 32) in [-1, 1]."""
    from torch import nn

    layers: list[nn.Module] = []
    for cin, cout in ((3, 32), (32, 64), (64, 128), (128, 128)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]  # fmt: skip
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, n_classes)]
    return nn.Sequential(*layers)


def prepare(images: np.ndarray) -> Any:
    """(N, H, W, 3) uint8 -> (N, 3, 32, 32) float in [-1, 1] (area-averaged)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-2:] != (INPUT, INPUT):
        x = torch.nn.functional.interpolate(x, size=(INPUT, INPUT), mode="area")
    return x


@dataclass(frozen=True)
class Oracle:
    kind: str
    names: tuple[str, ...]
    net: Any

    def logits(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        import torch

        out = [np.zeros((0, len(self.names)), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                out.append(self.net(prepare(images[i : i + batch])).numpy())
        return np.concatenate(out)

    def predict(self, images: np.ndarray) -> list[str]:
        """Label names of (N, H, W, 3) uint8 images."""
        return [self.names[i] for i in self.logits(images).argmax(1)]


@dataclass(frozen=True)
class OracleConfig:
    seed: int = 0
    train_renders: int = 30000
    test_per_group: int = 10
    fg_epochs: int = 15
    bg_epochs: int = 1
    batch: int = 128
    lr: float = 3e-3


def _augment(x: Any, kind: str, g: Any) -> Any:
    """Label-preserving changes: flips and 2-pixel shifts for both; for the fg oracle also a
    random colour-channel order (animal colours are random in the world)."""
    import torch

    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(3)
    dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
    x = torch.roll(x, (dy, dx), (2, 3))
    if kind == "fg":
        x = x[:, torch.randperm(3, generator=g)]
    return x


def train_one(
    kind: str,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    cfg: OracleConfig,
    log: Any = print,
) -> tuple[Any, float]:
    """Train one oracle (AdamW, one-cycle, label smoothing); returns it and its held-out
    accuracy."""
    import torch

    torch.manual_seed(derive_seed(cfg.seed, "oracle", kind))
    net = _net(len(NAMES[kind]))
    (x, y), (x_test, y_test) = train, test
    steps_per_epoch = max(1, len(x) // cfg.batch)
    epochs = cfg.fg_epochs if kind == "fg" else cfg.bg_epochs
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "oracle-data", kind))
    accuracy = 0.0
    for epoch in range(epochs):
        net.train()
        start, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x), generator=g)
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch : (s + 1) * cfg.batch]
            loss = torch.nn.functional.cross_entropy(
                net(_augment(x[idx], kind, g)), y[idx], label_smoothing=0.05
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        net.eval()
        with torch.inference_mode():
            accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
        log(
            f"{kind} oracle epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.3f}, "
            f"held-out accuracy {accuracy:.4f} ({time.perf_counter() - start:.0f} s)"
        )
    return net, accuracy


def shipped_oracles_dir() -> Path:
    return Path(__file__).parent / "weights" / "oracles"


def train_oracles(
    out: str | Path, cfg: OracleConfig | None = None, workers: int = 2, log: Any = print
) -> dict[str, float]:
    """Render the data (cached in ``out/renders``), train both oracles, save them to ``out``
    (``fg.safetensors``, ``bg.safetensors``, ``oracles.json``); returns held-out accuracies."""
    import torch
    from safetensors.torch import save_file

    from dreamshift.world.tiny_dream import load_renders, render_world

    cfg = cfg or OracleConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renders = render_world(
        out / "renders", cfg.seed, cfg.train_renders, cfg.test_per_group, workers
    )
    images, fg, bg = load_renders(renders, "train")
    test_images, test_fg, test_bg = load_renders(renders, "test")
    x, x_test = prepare(images), prepare(test_images)
    labels = {"fg": (fg, test_fg), "bg": (bg, test_bg)}
    accuracies = {}
    for kind in NAMES:
        y, y_test = (torch.from_numpy(v) for v in labels[kind])
        net, accuracies[kind] = train_one(kind, (x, y), (x_test, y_test), cfg, log)
        save_file(net.state_dict(), str(out / f"{kind}.safetensors"))
    meta = {
        "names": {k: list(v) for k, v in NAMES.items()},
        "input": f"(B, 3, {INPUT}, {INPUT}), area-resized, x / 127.5 - 1",
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracies.items()},
        "held_out_images": len(test_images),
        "config": asdict(cfg),
    }
    (out / "oracles.json").write_text(json.dumps(meta, indent=2) + "\n")
    return accuracies


def load_oracle(kind: str, folder: str | Path | None = None) -> Oracle:
    """The ``fg`` or ``bg`` oracle from ``folder`` (default: the ones shipped in the package)."""
    from safetensors.torch import load_file

    if kind not in NAMES:
        raise DreamshiftError(f"unknown oracle {kind!r}: choose fg or bg")
    folder = Path(folder) if folder else shipped_oracles_dir()
    weights = folder / f"{kind}.safetensors"
    if not weights.is_file():
        raise DreamshiftError(
            f"no {kind} oracle at {weights}: train one with `dreamshift world train-oracles`"
        )
    net = _net(len(NAMES[kind]))
    net.load_state_dict(load_file(str(weights)))
    net.eval()
    return Oracle(kind, tuple(NAMES[kind]), net)
