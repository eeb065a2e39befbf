"""Classifier adapters: every model the audit runs shows one surface.

Like timm's models (Wightman 2019), a classifier exposes ``forward_features(x) -> (B, D)`` and
``forward_head(features) -> (B, K)`` next to its preprocessing (input side, mean, std) and its
label space (``classes``, one name per output). Linear probes and the audit fall out of that.

Where a model comes from is chosen by its *spec*:

- ``world-cnn``, ``world-resnet18``: the world's ERM classifiers shipped in the package (trained
  on the correlated train split by ``dreamshift train-classifier``);
- a folder written by ``dreamshift train-classifier`` (``classifier.json`` + ``model.safetensors``);
- a finished ``dreamshift learn`` run folder (its class head on the features it reads);
- ``timm:NAME``, ``torchvision:NAME`` (extra ``[zoo]``) and ``open_clip:ARCH/PRETRAINED``
  (extra ``[clip]``, zero-shot from prompt templates), imported only when asked for.

>>> clf = load_classifier("world-cnn")  # doctest: +SKIP
>>> logits = clf.logits(images)  # (N, H, W, 3) uint8 -> (N, K)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamshift.errors import DreamshiftError
from dreamshift.images import sha256_file
from dreamshift.registry import Registry

CHECKPOINT_JSON = "classifier.json"
CHECKPOINT_WEIGHTS = "model.safetensors"
WORLD_MEAN = (0.5, 0.5, 0.5)  # x / 127.5 - 1
WORLD_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# architecture name -> constructor(num_classes) of a module with forward_features/forward_head
ARCHITECTURES: Registry[Callable[[int], nn.Module]] = Registry("architecture")


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@ARCHITECTURES.register("world-cnn")
class WorldCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool stages (32-64-128-256 channels) and global average pooling:
    about 390 k parameters, for 64 x 64 inputs."""

    def __init__(self, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((3, 32), (32, 64), (64, 128), (128, 256)):
            layers += [*_conv_bn(cin, cout), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 256
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


@ARCHITECTURES.register("world-resnet18")
class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016): 7x7 stride-2 stem, max-pool, four stages of two basic
    blocks (64-128-256-512 channels), global average pooling; 11.2 M parameters. The same
    layout as torchvision's ``resnet18``, written in plain torch."""

    def __init__(self, num_classes: int):
        super().__init__()
        stem = [
            nn.Conv2d(3, 64, 7, 2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
        ]
        blocks: list[nn.Module] = []
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512)):
            blocks += [_BasicBlock(cin, cout, 1 if i == 0 else 2), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 512
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 512)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass
class Classifier:
    """A model with its preprocessing and label space. ``net`` has ``forward_features`` and
    ``forward_head``; ``classes[k]`` names output ``k``."""

    name: str
    net: nn.Module
    classes: tuple[str, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str = ""
    device: str = "cpu"

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalised float on the model's device."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = nn.functional.interpolate(
                x.float() / 255.0,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                antialias=True,
            )
            return (x - mean) / std
        # (x / 255 - mean) / std in one pass over the pixels
        return torch.addcmul(-mean / std, x.float(), 1.0 / (255.0 * std))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # type: ignore[operator]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(features)  # type: ignore[operator]

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, K) float32 logits over ``classes``."""
        x = self.preprocess(images)
        return self.forward_head(self.forward_features(x)).float().cpu().numpy()


# ---- checkpoints written by `dreamshift train-classifier` ------------------------------------


def save_checkpoint(folder: Path, net: nn.Module, meta: dict[str, Any], half: bool = False) -> None:
    """``folder/model.safetensors`` (float16 when ``half``: half the size) and
    ``folder/classifier.json`` (architecture, classes, preprocessing, training record)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in net.state_dict().items()
    }
    tmp = folder / (CHECKPOINT_WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(folder / CHECKPOINT_WEIGHTS)
    (folder / CHECKPOINT_JSON).write_text(json.dumps(meta, indent=2) + "\n")


def load_checkpoint(folder: str | Path, device: str = "cpu") -> Classifier:
    """A classifier folder written by ``dreamshift train-classifier``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / CHECKPOINT_JSON, folder / CHECKPOINT_WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise DreamshiftError(
            f"{folder} is not a classifier checkpoint (it needs {CHECKPOINT_JSON} and "
            f"{CHECKPOINT_WEIGHTS}) nor a learn run (config.json and checkpoint.pt): train one "
            "with `dreamshift train-classifier` or `dreamshift learn`, or give a run folder "
            "inside a learn --out folder"
        )
    try:
        meta = json.loads(meta_path.read_text())
        arch, classes = meta["architecture"], tuple(meta["classes"])
        input_size = int(meta["input_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DreamshiftError(
            f"{meta_path} is not a valid classifier record ({exc!r}): it needs architecture, "
            "classes and input_size"
        ) from exc
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
        input_size=input_size,
        mean=tuple(meta.get("mean", WORLD_MEAN)),
        std=tuple(meta.get("std", WORLD_STD)),
        weights_sha256=sha256_file(weights),
        device=device,
    )


# ---- sources: spec string -> Classifier ------------------------------------------------------

# prefix -> builder(rest of the spec, dataset classes, device)
SOURCES: Registry[Callable[[str, Sequence[str], str], Classifier]] = Registry("model source")


def shipped_classifiers_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "world" / "weights" / "classifiers"


def shipped_classifiers() -> list[str]:
    return ARCHITECTURES.names("world-*")


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
        int(cfg["input_size"][-1]),
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
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
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
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
        int(size),
        tuple(mean),
        tuple(std),
        device=device,
    )


def load_classifier(
    spec: str, dataset_classes: Sequence[str] = (), device: str = "cpu"
) -> Classifier:
    """The classifier a spec names (see the module docstring). ``dataset_classes`` are used by
    zero-shot models to write their prompts."""
    if Path(spec).is_dir():
        from dreamshift.learn import run  # learn builds on audit: imported on use

        if run.is_run(spec):
            return run.run_classifier(spec, device)
        return load_checkpoint(spec, device)
    if spec in ARCHITECTURES.names("world-*"):
        folder = shipped_classifiers_dir() / spec
        if not folder.is_dir():
            raise DreamshiftError(
                f"the shipped {spec} checkpoint is missing from {folder}: reinstall dreamshift "
                f"or train one with `dreamshift train-classifier DATASET --arch {spec}`"
            )
        return load_checkpoint(folder, device)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        return SOURCES.get(prefix)(rest, dataset_classes, device)
    raise DreamshiftError(
        f"unknown model {spec!r}: give a classifier folder, one of "
        f"{', '.join(shipped_classifiers())}, or SOURCE:NAME with SOURCE one of "
        f"{', '.join(SOURCES.names())} (e.g. timm:resnet50)"
    )
