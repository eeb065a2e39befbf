"""Classifiers from model zoos, imported only when asked for: ``timm:NAME``, ``torchvision:NAME``
(extra ``[zoo]``) and ``open_clip:ARCH/PRETRAINED`` (extra ``[clip]``, zero-shot from prompt
templates, Radford et al. 2021). Each source is registered in :data:`SOURCES` by its prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dreamshift.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from dreamshift.errors import DreamshiftError
from dreamshift.models.classifier import Classifier
from dreamshift.registry import Registry

# prefix -> builder(rest of the spec, dataset classes, device)
SOURCES: Registry[Callable[[str, Sequence[str], str], Classifier]] = Registry("model source")


def _need(module: str, extra: str, spec: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DreamshiftError(
            f"model {spec!r} needs {module}, which is not installed: "
            f"pip install 'dreamshift[{extra}]'"
        ) from exc


class _TorchvisionAdapter(nn.Module):
    """torchvision classifiers end in ``fc`` (ResNets), ``classifier`` (most others) or
    ``heads`` (ViT); the features are what goes into that last block."""

    def __init__(self, model: nn.Module):
        super().__init__()
        for attr in ("fc", "classifier", "heads", "head"):
            if isinstance(getattr(model, attr, None), nn.Module):
                self.head_name = attr
                break
        else:
            raise DreamshiftError(f"cannot find the classification head of {type(model).__name__}")
        self.head = getattr(model, self.head_name)
        setattr(model, self.head_name, nn.Identity())
        self.body = model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def imagenet_classes() -> tuple[str, ...]:
    """ImageNet-1k outputs are named by index (``imagenet:0`` ... ``imagenet:999``); a label
    map (:mod:`dreamshift.audit.labels`) ties them to a dataset's classes."""
    return tuple(f"imagenet:{i}" for i in range(1000))


@SOURCES.register("timm")
def _from_timm(name: str, dataset_classes: Sequence[str], device: str) -> Classifier:
    timm = _need("timm", "zoo", f"timm:{name}")
    try:
        net = timm.create_model(name, pretrained=True)
    except Exception as exc:  # timm raises RuntimeError / hub errors
        raise DreamshiftError(f"timm cannot create {name!r} with weights ({exc})") from exc
    cfg = timm.data.resolve_data_config({}, model=net)
    return Classifier(
        f"timm:{name}",
        net.eval().to(device),
        imagenet_classes(),
        Preprocessing(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"])),
        device=device,
    )


@SOURCES.register("torchvision")
def _from_torchvision(name: str, dataset_classes: Sequence[str], device: str) -> Classifier:
    tv = _need("torchvision", "zoo", f"torchvision:{name}")
    try:
        net = tv.models.get_model(name, weights="DEFAULT")
    except Exception as exc:
        raise DreamshiftError(f"torchvision cannot build {name!r} with weights ({exc})") from exc
    return Classifier(
        f"torchvision:{name}",
        _TorchvisionAdapter(net).eval().to(device),
        imagenet_classes(),
        Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD),
        device=device,
    )


class _ClipZeroShot(nn.Module):
    """Zero-shot CLIP (Radford et al. 2021): features are L2-normalised image embeddings, the
    head is 100 x cosine similarity to the mean embedding of each class's prompts."""

    text_features: torch.Tensor

    def __init__(self, model: Any, text_features: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("text_features", text_features)  # (K, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.encode_image(x)
        return f / f.norm(dim=-1, keepdim=True)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return 100.0 * features @ self.text_features.T


CLIP_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
)


@SOURCES.register("open_clip")
def _from_open_clip(spec: str, dataset_classes: Sequence[str], device: str) -> Classifier:
    open_clip = _need("open_clip", "clip", f"open_clip:{spec}")
    arch, _, pretrained = spec.partition("/")
    try:
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise DreamshiftError(f"open_clip cannot create {spec!r} ({exc})") from exc
    model.eval().to(device)
    with torch.inference_mode():
        rows = []
        for c in dataset_classes:
            t = model.encode_text(tokenizer([t.format(c) for t in CLIP_TEMPLATES]).to(device))
            t = (t / t.norm(dim=-1, keepdim=True)).mean(0)
            rows.append(t / t.norm())
    size = getattr(model.visual, "image_size", 224)
    size = size[0] if isinstance(size, tuple | list) else size
    mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return Classifier(
        f"open_clip:{spec}",
        _ClipZeroShot(model, torch.stack(rows)),
        tuple(dataset_classes),
        Preprocessing(int(size), tuple(mean), tuple(std)),
        device=device,
    )
