"""Oracles: classifiers that name the foreground class and the background of a world image.

They stand in for the human label check of D3S (Kattakinda et al. 2022, Sec. 4: annotators
confirmed that generated images show their class and background) and measure the *label
fidelity* of dreamed images. Each is a small CNN trained on clean world renders (every class on
every background, random appearance, scale and placement; see
:func:`dreamshift.studies.tiny_dream.render_world`) and tested on renders of silhouettes it never
saw (the world's test split). The foreground is carried by shape alone (colour and texture are
random), so the fg oracle trains on colour-permuted, flipped and shifted copies.

Load them with :func:`dreamshift.models.oracles.load_oracle`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dreamshift.config import Config
from dreamshift.models.oracles import NAMES, PREPROCESSING, oracle_net, prepare
from dreamshift.seeding import derive_seed
from dreamshift.train.loop import TrainState, descend, fit


@dataclass(frozen=True)
class OracleConfig(Config):
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
    net = oracle_net(len(NAMES[kind]))
    (x, y), (x_test, y_test) = train, test
    steps_per_epoch = max(1, len(x) // cfg.batch)
    epochs = cfg.fg_epochs if kind == "fg" else cfg.bg_epochs
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "oracle-data", kind))

    def update(step: int, idx: Any, g: Any) -> dict[str, float]:
        net.train()
        loss = torch.nn.functional.cross_entropy(
            net(_augment(x[idx], kind, g)), y[idx], label_smoothing=0.05
        )
        return descend(loss, opt, sched)

    def evaluate() -> dict[str, Any]:
        net.eval()
        with torch.inference_mode():
            return {"held_out_acc": float((net(x_test).argmax(1) == y_test).float().mean())}

    # one generator for the whole run, not one per epoch (as the shipped oracles were trained)
    history = fit(
        f"{kind} oracle", len(x), cfg.batch, epochs, update, lambda epoch: g,
        TrainState(model=net, optimizer=opt, schedule=sched), None, evaluate, log,
    )  # fmt: skip
    accuracy = history[-1]["held_out_acc"] if history else 0.0
    return net, accuracy


def train_oracles(
    out: str | Path, cfg: OracleConfig | None = None, workers: int = 2, log: Any = print
) -> dict[str, float]:
    """Render the data (cached in ``out/renders``), train both oracles, save them to ``out``
    (``fg.safetensors``, ``bg.safetensors``, ``oracles.json``); returns held-out accuracies."""
    import torch
    from safetensors.torch import save_file

    from dreamshift.studies.tiny_dream import load_renders, render_world

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
        "preprocessing": PREPROCESSING.to_dict(),
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracies.items()},
        "held_out_images": len(test_images),
        "config": asdict(cfg),
    }
    (out / "oracles.json").write_text(json.dumps(meta, indent=2) + "\n")
    return accuracies
