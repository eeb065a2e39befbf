"""Fine-tuning a pretrained classifier on a dataset (``dreamshift learn DATASET --finetune
linear|lora|full --model SPEC``, under any learning algorithm) for any model the audit loads
(the shipped world classifiers, a classifier folder, ``timm:``, ``torchvision:``,
``efficientnet_lite:``, ``open_clip:``).

- ``linear``: a linear probe: the head alone is trained, the features are frozen;
- ``lora``: low-rank adapters (Hu et al. 2022) through peft on the backbone's layers, and the
  head. By default every ``Conv2d`` (but grouped, depthwise ones) and ``Linear`` the features
  pass through; ``--targets``
  names others (peft's suffix match, e.g. ``attn`` for open_clip's attention, DataDream's
  q/v adapters of rank 16, alpha 32; Kim et al. 2024);
- ``full``: every parameter.

The head starts as the base model's own head over the dataset's classes: the same rows where
the base model's classes are the dataset's (the world classifiers; open_clip's zero-shot head,
Radford et al. 2021), else the mean of the rows a label map gathers into each class (ImageNet
models; :mod:`dreamshift.models.labels`). Heads are read off as linear maps of the features,
which every supported head is in evaluation mode. In ``linear`` and ``lora`` runs the backbone
stays in evaluation mode (batch-norm statistics and dropout of the base model frozen).

The output folder holds ``classifier.json`` (the base model's spec and weights hash, the
method and its settings, classes, preprocessing: the base model's) and ``model.safetensors``
with the trained tensors only (the head and the adapters; everything for ``full``). ``dreamshift
audit --model FOLDER`` rebuilds the base model, checks its weights hash and loads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dreamshift.data.images import sha256_file
from dreamshift.errors import DreamshiftError
from dreamshift.models.classifier import CHECKPOINT_JSON, CHECKPOINT_WEIGHTS, Classifier
from dreamshift.models.loading import FOLDER_KINDS, FolderKind, load_classifier

METHODS = ("linear", "lora", "full")


@dataclass(frozen=True)
class Finetune:
    """How to fine-tune ``model``: ``method`` one of :data:`METHODS`; LoRA's ``rank``,
    ``alpha`` and ``targets`` (module names; empty: every Conv2d and Linear of the features)."""

    method: str
    model: str
    rank: int = 16
    alpha: int = 32
    targets: tuple[str, ...] = ()
    label_map: str = ""

    def check(self) -> None:
        if self.method not in METHODS:
            raise DreamshiftError(f"--finetune {self.method!r}: choose one of {', '.join(METHODS)}")
        if not self.model:
            raise DreamshiftError(f"--finetune {self.method} needs --model SPEC: the model to tune")
        if self.rank < 1 or self.alpha <= 0:
            raise DreamshiftError(f"--rank {self.rank} must be >= 1 and --alpha {self.alpha} > 0")


class FineTunedNet(nn.Module):
    """A base classifier's features and a new linear head over the dataset's classes. Unless
    ``train_backbone``, ``train()`` leaves the backbone in evaluation mode."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, train_backbone: bool):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = head.in_features
        self.train_backbone = train_backbone

    def train(self, mode: bool = True) -> FineTunedNet:
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)  # type: ignore[operator]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@torch.no_grad()
def _features_probe(base: Classifier) -> tuple[int, list[str]]:
    """(feature dimension, names of the Conv2d/Linear modules ``forward_features`` calls)."""
    called: list[str] = []
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
        for name, module in base.net.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    was_training = base.net.training
    base.net.eval()
    try:
        size = base.preprocessing.input_size
        features = base.forward_features(torch.zeros(1, 3, size, size, device=base.device))
    finally:
        for h in hooks:
            h.remove()
        base.net.train(was_training)
    if features.dim() != 2:
        raise DreamshiftError(
            f"{base.name}: its features have shape {tuple(features.shape)}, not (batch, dim)"
        )
    return int(features.shape[1]), list(dict.fromkeys(called))


@torch.no_grad()
def _head_as_linear(base: Classifier, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The base head as ``W`` (K_base, dim) and ``b`` (K_base,): its outputs on the zero
    vector and the unit vectors (the head is linear in evaluation mode)."""
    base.net.eval()
    basis = torch.cat([torch.zeros(1, dim), torch.eye(dim)]).to(base.device)
    out = base.forward_head(basis).float().cpu()
    return (out[1:] - out[0]).T.contiguous(), out[0].clone()


def initial_head(base: Classifier, classes: Sequence[str], dim: int, label_map: str) -> nn.Linear:
    """A linear head over ``classes`` that starts as the base model's (module docstring)."""
    from dreamshift.models.labels import LabelMap, read_label_map

    weight, bias = _head_as_linear(base, dim)
    mapping = read_label_map(label_map) if label_map else None
    lm = LabelMap.build(base.classes, classes, mapping, base.name, base.label_space)
    head = nn.Linear(dim, len(classes))
    with torch.no_grad():
        for k, members in enumerate(lm.members):
            head.weight[k] = weight[list(members)].mean(0)
            head.bias[k] = bias[list(members)].mean()
    return head


def _lora_by_default(module: nn.Module) -> bool:
    """Whether LoRA goes on a layer the features pass through when ``--targets`` names none:
    a Linear, or an ungrouped Conv2d of torch's own class. Not grouped (depthwise)
    convolutions: peft adapts one only where the rank is a multiple of its groups, and they
    hold few weights (9 per channel); not Conv2d subclasses: peft builds the adapter's
    convolutions as the layer's class, which one with constructor arguments or padding of its
    own (TensorFlow's "same") breaks."""
    if isinstance(module, nn.Linear):
        return True
    return type(module) is nn.Conv2d and module.groups == 1


def _inject_lora(backbone: nn.Module, targets: Sequence[str], rank: int, alpha: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    names = [n for n, _ in backbone.named_modules() if n][:8]  # before peft rewrites any
    try:
        inject_adapter_in_model(
            LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0),
            backbone,
        )
    except (ValueError, TypeError, AssertionError) as exc:  # peft: a target that matches no
        # module, or one it cannot adapt (its class rebuilt with other arguments fails)
        raise DreamshiftError(
            f"--targets {','.join(targets)}: peft cannot put LoRA there ({exc}); the model's "
            f"modules are named like {', '.join(names)}, ..."
        ) from exc


def assemble(
    base: Classifier, classes: Sequence[str], ft: Finetune, targets: Sequence[str] = ()
) -> tuple[FineTunedNet, list[str]]:
    """The net to train: ``base``'s features (with LoRA at ``targets`` or ``ft.targets`` or,
    for neither, every Conv2d/Linear of the features) and its head over ``classes``; returns it
    and the LoRA targets. Only what ``ft.method`` trains requires grad. Random parts (LoRA's
    A matrices) are drawn from torch's global generator: seed it first."""
    dim, layers = _features_probe(base)
    head = initial_head(base, classes, dim, ft.label_map)
    backbone = base.net.cpu()
    for p in backbone.parameters():
        p.requires_grad_(ft.method == "full")
    used: list[str] = []
    if ft.method == "lora":
        modules = dict(backbone.named_modules())
        adaptable = [n for n in layers if _lora_by_default(modules[n])]
        used = list(targets or ft.targets or adaptable)
        if not used:
            raise DreamshiftError(
                f"{base.name}: its features call no Conv2d or Linear module: name the modules "
                "to adapt with --targets"
            )
        _inject_lora(backbone, used, ft.rank, ft.alpha)
        for name, p in backbone.named_parameters():
            p.requires_grad_("lora_" in name)
    return FineTunedNet(backbone, head, train_backbone=ft.method == "full"), used


def saved_state(net: FineTunedNet) -> dict[str, torch.Tensor]:
    """What the folder stores: every tensor when the whole net trains, else the trained ones."""
    if net.train_backbone:
        return net.state_dict()
    return {n: p.detach() for n, p in net.named_parameters() if p.requires_grad}


def is_finetuned(folder: Path) -> bool:
    try:
        record = json.loads((folder / CHECKPOINT_JSON).read_text())
    except (OSError, ValueError):  # none, or damaged: the classifier loader names it
        return False
    return isinstance(record, dict) and "finetuned_from" in record


def load_finetuned(folder: Path, device: str = "cpu") -> Classifier:
    """A folder written by the earlier ``train-classifier --finetune`` (now ``learn
    --finetune``): its base model rebuilt, then the trained tensors loaded."""
    from safetensors.torch import load_file

    path = folder / CHECKPOINT_JSON
    try:
        meta = json.loads(path.read_text())
        classes, spec, method = tuple(meta["classes"]), meta["finetuned_from"], meta["finetune"]
        ft = Finetune(method["method"], spec, method["rank"], method["alpha"],
                      label_map=method.get("label_map", ""))  # fmt: skip
        targets = tuple(method["targets"] or ())
        texts = [spec, ft.method, ft.label_map, meta["base_weights_sha256"], *classes, *targets]
        if not all(isinstance(t, str) for t in texts) or not isinstance(ft.rank, int):
            raise TypeError("names, hashes, targets and the method must be text, the rank a number")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DreamshiftError(
            f"{path} is damaged ({type(exc).__name__}: {exc}): it is no fine-tuned classifier's "
            "record"
        ) from exc
    base = load_classifier(spec, classes)
    if ft.method != "full" and base.weights_sha256 != meta["base_weights_sha256"]:
        raise DreamshiftError(
            f"{folder} was tuned from {spec} with weights sha256 "
            f"{meta['base_weights_sha256'][:12]}…, but {spec} now loads weights "
            f"{base.weights_sha256[:12]}…: give the same base weights (SPEC@FILE)"
        )
    net, _ = assemble(base, classes, ft, targets=targets)
    weights = folder / CHECKPOINT_WEIGHTS
    state = load_file(str(weights))
    expected = saved_state(net)
    unexpected, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
    if unexpected or missing:
        raise DreamshiftError(
            f"{weights} does not fit {spec} tuned by {ft.method} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): was it written by another dreamshift version?"
        )
    net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False
    )
    net.eval().to(device)
    return Classifier(
        name=meta.get("name", folder.name),
        net=net,
        classes=classes,
        preprocessing=base.preprocessing,
        weights_sha256=sha256_file(weights),
        device=device,
        weights_file=str(weights),
    )


FOLDER_KINDS.register("finetuned")(FolderKind(is_finetuned, load_finetuned))
