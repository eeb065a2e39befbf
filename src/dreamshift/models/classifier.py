"""The classifier adapter: every model the audit runs shows one surface.

Like timm's models (Wightman 2019), a classifier exposes ``forward_features(x) -> (B, D)`` and
``forward_head(features) -> (B, K)`` next to its preprocessing (stored with its weights) and
its label space (``classes``, one name per output). Linear probes and the audit fall out of
that. The shipped world classifiers, and folders written by the earlier ``dreamshift
train-classifier`` (now ``dreamshift learn``), hold ``classifier.json`` and
``model.safetensors`` (:func:`load_checkpoint`).

>>> from dreamshift.models.loading import load_classifier
>>> import numpy as np
>>> clf = load_classifier("world-cnn")
>>> clf.logits(np.zeros((2, 64, 64, 3), np.uint8)).shape  # (N, H, W, 3) uint8 -> (N, K)
(2, 10)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamshift.data.images import sha256_file
from dreamshift.data.transforms import Preprocessing
from dreamshift.errors import DreamshiftError
from dreamshift.models.architectures import ARCHITECTURES

CHECKPOINT_JSON = "classifier.json"
CHECKPOINT_WEIGHTS = "model.safetensors"


@dataclass
class Classifier:
    """A model with its preprocessing and label space. ``net`` has ``forward_features`` and
    ``forward_head``; ``classes[k]`` names output ``k``; ``label_space`` names a known label
    space (``imagenet-1k``) whose shipped label map applies; ``weights_file`` is the file the
    weights came from and ``weights_sha256`` its hash (or, without a file, the hash of the
    loaded parameters)."""

    name: str
    net: nn.Module
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    weights_sha256: str = ""
    device: str = "cpu"
    label_space: str = ""
    weights_file: str = ""

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalised float on the model's device."""
        return self.preprocessing(images, self.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # type: ignore[operator]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(features)  # type: ignore[operator]

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, K) float32 logits over ``classes``."""
        x = self.preprocess(images)
        return self.forward_head(self.forward_features(x)).float().cpu().numpy()


def preprocessing_of(meta: dict[str, Any], where: str) -> Preprocessing:
    """A record's preprocessing: its ``preprocessing`` entry, or (records written before it
    existed) ``input_size``, ``mean`` and ``std`` at the top level."""
    if "preprocessing" in meta:
        return Preprocessing.from_dict(meta["preprocessing"], where)
    return Preprocessing.from_dict(meta, where)


def load_checkpoint(folder: str | Path, device: str = "cpu") -> Classifier:
    """A classifier folder of ``classifier.json`` and ``model.safetensors``: a shipped world
    classifier, or one written by the earlier ``dreamshift train-classifier``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / CHECKPOINT_JSON, folder / CHECKPOINT_WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        suffixes = (".pth", ".pt", ".bin", ".safetensors")
        loose = sorted(p.name for p in folder.glob("*") if p.suffix in suffixes)
        if loose:
            raise DreamshiftError(
                f"{folder} holds weights files ({', '.join(loose[:3])}) but no classifier record: "
                f"name the architecture, e.g. --model torchvision:NAME --weights "
                f"{folder / loose[0]}"
            )
        raise DreamshiftError(
            f"{folder} is not a classifier checkpoint (it needs {CHECKPOINT_JSON} and "
            f"{CHECKPOINT_WEIGHTS}) nor a learn run: train one with `dreamshift learn`, and give "
            "the run folder it prints (inside its --out folder)"
        )
    try:
        meta = json.loads(meta_path.read_text())
        arch, classes = meta["architecture"], tuple(meta["classes"])
        if not all(isinstance(t, str) for t in (arch, meta.get("name", ""), *classes)):
            raise TypeError("the architecture, name and classes must be text")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DreamshiftError(
            f"{meta_path} is not a valid classifier record ({exc!r}): it needs architecture, "
            "classes and preprocessing"
        ) from exc
    preprocessing = preprocessing_of(meta, str(meta_path))
    net = ARCHITECTURES.get(arch)(len(classes))
    state = load_file(str(weights))
    expected = net.state_dict()
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs {arch} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if wrong or missing or unexpected:
        detail = "; ".join(
            wrong[:3]
            + [f"missing {missing[:3]}"] * bool(missing)
            + [f"unexpected {unexpected[:3]}"] * bool(unexpected)
        )
        raise DreamshiftError(
            f"{weights} does not fit a {arch} with {len(classes)} classes ({detail}): check that "
            f"{CHECKPOINT_JSON} names the architecture and classes it was trained with"
        )
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval().to(device)
    return Classifier(
        name=meta.get("name", folder.name),
        net=net,
        classes=classes,
        preprocessing=preprocessing,
        weights_sha256=sha256_file(weights),
        device=device,
    )
