"""Oracles: classifiers that name the foreground class and the background of a world image.

They stand in for the human label check of D3S (Kattakinda et al. 2022, Sec. 4: annotators
confirmed that generated images show their class and background) and measure the *label
fidelity* of dreamed images. Three small CNNs trained on world photos and pastes
(:mod:`dreamshift.studies.oracles` trains them; the package ships them): ``fg`` names the
animal (coat and shape), ``bg`` the scene, ``shape`` the animal from its shape alone (trained
on random coats, so that a coat alone cannot pass as the animal). The fg oracle's penultimate
features give the world's FID (:meth:`Oracle.features`,
:func:`dreamshift.metrics.frechet_distance`).

>>> import numpy as np
>>> load_oracle("bg").predict(np.zeros((1, 64, 64, 3), np.uint8))[0] in NAMES["bg"]
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.assets import shipped
from dreamshift.data.transforms import Preprocessing
from dreamshift.errors import DreamshiftError
from dreamshift.world.animals import CLASSES
from dreamshift.world.backgrounds import BACKGROUNDS

NAMES = {"fg": CLASSES, "bg": BACKGROUNDS, "shape": CLASSES}
INPUT = 32  # the shipped oracles see images resized to 32x32 (oracles.json records it)


def oracle_net(n_classes: int, input_size: int = INPUT) -> Any:
    """Four conv-BN-ReLU-maxpool stages (32-64-128-128 channels), global average pooling and a
    linear head: about 240 k parameters, input (B, 3, S, S) in [-1, 1]. For each doubling of S
    from 64 on, a 16-channel stage in front halves the image first, so a 64x64 input costs about
    twice a 32x32 one rather than four times, and the head sees what the 32x32 net sees."""
    from torch import nn

    stems, side = 0, input_size
    while side >= 2 * INPUT:
        stems, side = stems + 1, side // 2
    channels = [3] + [16] * stems + [32, 64, 128, 128]
    layers: list[nn.Module] = []
    for cin, cout in pairwise(channels):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]  # fmt: skip
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, n_classes)]
    return nn.Sequential(*layers)


PREPROCESSING = Preprocessing.world(INPUT, resize="area")  # [-1, 1], area-averaged to 32x32


def prepare(images: np.ndarray, preprocessing: Preprocessing = PREPROCESSING) -> Any:
    """(N, H, W, 3) uint8 -> (N, 3, S, S) float in [-1, 1] (area-averaged; S = 32 by default)."""
    return preprocessing(images)


@dataclass(frozen=True)
class Oracle:
    kind: str
    names: tuple[str, ...]
    net: Any
    preprocessing: Preprocessing = PREPROCESSING

    def logits(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        return self._run(self.net, len(self.names), images, batch)

    def features(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        """Penultimate features (N, 128): the pooled activations before the linear head."""
        return self._run(self.net[:-2], 128, images, batch)  # no dropout, no linear head

    def _run(self, net: Any, width: int, images: np.ndarray, batch: int) -> np.ndarray:
        """``net`` over ``images`` in batches: (N, width) float32."""
        import torch

        out = [np.zeros((0, width), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                out.append(net(prepare(images[i : i + batch], self.preprocessing)).numpy())
        return np.concatenate(out)

    def predict(self, images: np.ndarray) -> list[str]:
        """Label names of (N, H, W, 3) uint8 images."""
        return [self.names[i] for i in self.logits(images).argmax(1)]


def load_oracle(kind: str, folder: str | Path | None = None) -> Oracle:
    """The ``fg``, ``bg`` or ``shape`` oracle from ``folder`` (default: the ones shipped in the
    package)."""
    from safetensors.torch import load_file

    if kind not in NAMES:
        raise DreamshiftError(f"unknown oracle {kind!r}: choose one of {', '.join(NAMES)}")
    folder = Path(folder) if folder else shipped("oracles")
    weights = folder / f"{kind}.safetensors"
    if not weights.is_file():
        raise DreamshiftError(
            f"no {kind} oracle at {weights}: train one with `dreamshift world train-oracles`"
        )
    record = folder / "oracles.json"
    meta = json.loads(record.read_text()) if record.is_file() else {}
    preprocessing = Preprocessing.from_dict(meta.get("preprocessing", PREPROCESSING.to_dict()))
    net = oracle_net(len(NAMES[kind]), preprocessing.input_size)
    net.load_state_dict(load_file(str(weights)))
    net.eval()
    return Oracle(kind, tuple(NAMES[kind]), net, preprocessing)
