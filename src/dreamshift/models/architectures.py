"""The world's classifier architectures, registered by name (timm's ``@register_model``).

Each module exposes ``forward_features(x) -> (B, D)``, ``forward_head(features) -> (B, K)`` and
``num_features``, so linear probes and the audit read any of them the same way.

>>> net = ARCHITECTURES.get("world-cnn")(10)
>>> net.num_features, sum(p.numel() for p in net.parameters())
(256, 391466)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dreamshift.registry import Registry

# architecture name -> constructor(num_classes) of a module with forward_features/forward_head
ARCHITECTURES: Registry[Callable[[int], nn.Module]] = Registry("architecture")


def _conv_bn(cin: int, cout: int, stride: int = 1, norm: str = "batch") -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(cout) if norm == "batch" else nn.GroupNorm(8, cout),
        nn.ReLU(inplace=True),
    ]


@ARCHITECTURES.register("world-cnn")
class WorldCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool stages (32-64-128-256 channels) and global average pooling:
    about 390 k parameters, for 64 x 64 inputs. ``norm="group"``: GroupNorm (8 groups, Wu & He
    2018) in place of batch norm, so an image's features do not depend on its batch: the
    same on 1 process x batch 32 as on 2 x 16."""

    def __init__(self, num_classes: int, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((3, 32), (32, 64), (64, 128), (128, 256)):
            layers += [*_conv_bn(cin, cout, norm=norm), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 256
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@ARCHITECTURES.register("world-cnn-gn")
def world_cnn_gn(num_classes: int) -> WorldCNN:
    """world-cnn with GroupNorm: batch-independent features (several processes, small
    batches)."""
    return WorldCNN(num_classes, norm="group")


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
