"""Oracles: classifiers that name the animal, its shape and the scene of a world image.

They stand in for the human label check of D3S (Kattakinda et al. 2022, Sec. 4: annotators
confirmed that generated images show their class and background) and measure the *label
fidelity* of dreamed images, so they must judge a dreamed image as a person would: each is a
small CNN trained on world photos *and* pastes (every class on every background, scale 0.3-0.7,
train silhouettes) with augmentations a generator's output shows (blur, noise, and the round trip
through tiny-dream's autoencoder), and tested on held-out photos of unseen silhouettes.

- ``fg`` and ``bg``: typical coats; they name the animal (coat and shape) and the scene.
- ``shape``: random coats (colour channels permuted too), so the animal's shape alone decides:
  a zebra-striped blob does not pass as a zebra.

Load them with :func:`dreamshift.models.oracles.load_oracle`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.config import Config
from dreamshift.data.transforms import Preprocessing
from dreamshift.models.oracles import NAMES, oracle_net, prepare
from dreamshift.seeding import derive_seed
from dreamshift.train.loop import TrainState, descend, fit


@dataclass(frozen=True)
class OracleConfig(Config):
    seed: int = 0
    photo_renders: int = 15000  # typical coats: fg and bg oracles
    paste_renders: int = 15000
    shape_renders: int = 10000  # random coats, as photos and as many pastes: the shape oracle
    test_per_group: int = 10  # held-out photos per class x background
    fg_epochs: int = 15
    bg_epochs: int = 1
    shape_epochs: int = 30
    batch: int = 128
    lr: float = 3e-3
    noise: float = 25.0  # Gaussian noise of up to this standard deviation, in 0..255 levels
    vae_share: float = 0.3  # share of training images replaced by their VAE round trip
    vae: str = "tiny-dream"  # whose autoencoder makes the round trips ("" for none)
    input_size: int = 64  # the oracles' input side (images are area-averaged to it)


def _augment(x: Any, kind: str, g: Any, noise: float) -> Any:
    """Label-preserving changes: flips, 2-pixel shifts, a blur for a third of the batches,
    Gaussian noise of a random strength; for the shape oracle also a random colour-channel
    order (coats are random in its data)."""
    import torch

    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(3)
    dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
    x = torch.roll(x, (dy, dx), (2, 3))
    if torch.rand(1, generator=g).item() < 1 / 3:
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        x = torch.nn.functional.conv2d(x, k, padding=1, groups=3)
    sigma = torch.rand(len(x), 1, 1, 1, generator=g) * (2 * noise / 255)  # [-1, 1] is 2 wide
    x = x + sigma * torch.randn(x.shape, generator=g)
    if kind == "shape":
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
    net = oracle_net(len(NAMES[kind]), cfg.input_size)
    (x, y), (x_test, y_test) = train, test
    steps_per_epoch = max(1, len(x) // cfg.batch)
    epochs = {"fg": cfg.fg_epochs, "bg": cfg.bg_epochs, "shape": cfg.shape_epochs}[kind]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "oracle-data", kind))

    def update(step: int, idx: Any, g: Any) -> dict[str, float]:
        net.train()
        loss = torch.nn.functional.cross_entropy(
            net(_augment(x[idx], kind, g, cfg.noise)), y[idx], label_smoothing=0.05
        )
        return descend(loss, opt, sched)

    def evaluate() -> dict[str, Any]:
        net.eval()
        with torch.inference_mode():
            return {"held_out_acc": float((net(x_test).argmax(1) == y_test).float().mean())}

    history = fit(
        f"{kind} oracle", len(x), cfg.batch, epochs, update, lambda epoch: g,
        TrainState(model=net, optimizer=opt, schedule=sched), None, evaluate, log,
    )  # fmt: skip
    accuracy = history[-1]["held_out_acc"] if history else 0.0
    return net, accuracy


def vae_round_trip(images: np.ndarray, share: float, vae_model: str, seed: int) -> np.ndarray:
    """``images`` with a ``share`` of them (chosen by ``seed``) replaced by their round trip
    through the autoencoder of the diffusers model ``vae_model`` (posterior mean)."""
    if not share or not vae_model:
        return images
    import torch
    from diffusers import AutoencoderKL

    from dreamshift.models.diffusion import locate_model, quiet_libraries

    quiet_libraries()
    vae = AutoencoderKL.from_pretrained(locate_model(vae_model).path, subfolder="vae").eval()
    rng = np.random.default_rng(derive_seed(seed, "vae-round-trip"))
    chosen = np.flatnonzero(rng.random(len(images)) < share)
    out = images.copy()
    with torch.inference_mode():
        for i in range(0, len(chosen), 250):
            idx = chosen[i : i + 250]
            x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
            rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out[idx] = rec.permute(0, 2, 3, 1).numpy()
    return out


def train_oracles(
    out: str | Path, cfg: OracleConfig | None = None, workers: int = 2, log: Any = print
) -> dict[str, float]:
    """Render the data (cached under ``out``), train the three oracles, save them to ``out``
    (``fg.safetensors``, ``bg.safetensors``, ``shape.safetensors``, ``oracles.json``); returns
    held-out accuracies on photos."""
    import torch
    from safetensors.torch import save_file

    from dreamshift.studies.tiny_dream import load_renders, render_world

    cfg = cfg or OracleConfig()
    cfg.check()
    preprocessing = Preprocessing.world(cfg.input_size, resize="area")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def renders(name: str, n: int, test: int, render: str, coat: str) -> tuple[Any, Any]:
        root = render_world(out / name, cfg.seed, n, test, workers, render=render, coat=coat)
        train, test_set = load_renders(root, "train"), load_renders(root, "test")
        return train, test_set

    photos, photo_test = renders("photos", cfg.photo_renders, cfg.test_per_group, "photo",
                                 "typical")  # fmt: skip
    pastes, paste_test = renders("pastes", cfg.paste_renders, 1, "paste", "typical")
    shape_photos, shape_test = renders("shape-photos", cfg.shape_renders, cfg.test_per_group,
                                       "photo", "random")  # fmt: skip
    shape_pastes, _ = renders("shape-pastes", cfg.shape_renders, 1, "paste", "random")

    def training_set(*parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        images = np.concatenate([p[0] for p in parts])
        images = vae_round_trip(images, cfg.vae_share, cfg.vae, cfg.seed)
        return images, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

    typical = training_set(photos, pastes)
    shape = training_set(shape_photos, shape_pastes)
    data = {  # kind: (train images, train labels, test images, test labels)
        "fg": (typical[0], typical[1], photo_test[0], photo_test[1]),
        "bg": (typical[0], typical[2], photo_test[0], photo_test[2]),
        "shape": (shape[0], shape[1], shape_test[0], shape_test[1]),
    }
    accuracies, on_pastes = {}, {}
    for kind, (x, y, x_test, y_test) in data.items():
        pair = ((prepare(x, preprocessing), torch.from_numpy(y)),
                (prepare(x_test, preprocessing), torch.from_numpy(y_test)))  # fmt: skip
        net, accuracies[kind] = train_one(kind, *pair, cfg, log)
        save_file(net.state_dict(), str(out / f"{kind}.safetensors"))
        if kind != "shape":
            truth = paste_test[1 if kind == "fg" else 2]
            with torch.inference_mode():
                pred = net(prepare(paste_test[0], preprocessing)).argmax(1).numpy()
            on_pastes[kind] = float((pred == truth).mean())
    meta = {
        "names": {k: list(v) for k, v in NAMES.items()},
        "preprocessing": preprocessing.to_dict(),
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracies.items()},
        "held_out_images": {"fg": len(photo_test[0]), "shape": len(shape_test[0])},
        "held_out_accuracy_on_pastes": {k: round(v, 4) for k, v in on_pastes.items()},
        "held_out": "photos of test silhouettes (typical coats; random coats for shape)",
        "config": asdict(cfg),
    }
    (out / "oracles.json").write_text(json.dumps(meta, indent=2) + "\n")
    return accuracies
