"""The spurious feature similarity loss of Maung Maung et al. (2024, arXiv 2402.08200).

A classifier's *class-k spurious feature* of an image x is the class-k contribution of its
penultimate features, s_k(x) = φ(x) ⊙ w_k, with w_k the head's weights for class k (Neuhaus et
al. 2023 take neural-PCA components of that vector). While the generator is fine-tuned on a
few spurious images of class k, SFSL = 1 − cos(s_k(x_ref), s_k(x̂)) pulls the image the UNet
predicts (the one-step estimate x̂0, decoded by the VAE) toward the reference's spurious
feature, so that the tuned model generates what the classifier takes for class k.

For a head that is not affine, w_k is its gradient for class k at zero features.

>>> import torch
>>> phi = torch.tensor([[1.0, 2.0, 0.0]])
>>> w = torch.tensor([[0.5, -1.0, 3.0]])
>>> abs(spurious_similarity_loss(phi, phi, w).item()) < 1e-6  # the same image: no loss
True
"""

from __future__ import annotations

from typing import Any

import torch

from dreamshift.errors import DreamshiftError
from dreamshift.models.classifier import Classifier
from dreamshift.models.loading import load_classifier


def spurious_similarity_loss(
    reference: torch.Tensor, predicted: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Mean of 1 − cos(φ(x_ref) ⊙ w_k, φ(x̂) ⊙ w_k) over a batch; ``weights``: (B, D), each
    row its image's w_k."""
    cos = torch.nn.functional.cosine_similarity(reference * weights, predicted * weights, dim=1)
    return (1.0 - cos).mean()


class SpuriousFeatures:
    """A frozen classifier (any ``--model`` the audit accepts) seen through its penultimate
    features and its per-class head weights."""

    def __init__(self, spec: str, classes: list[str], device: str):
        self.classifier: Classifier = load_classifier(spec, classes, device)
        self.classifier.net.eval().requires_grad_(False)
        missing = [c for c in classes if c not in self.classifier.classes]
        if missing:
            raise DreamshiftError(
                f"--sfsl {spec} has no output for class(es) {missing}: the spurious feature of "
                "class k needs the classifier's class k (its classes: "
                f"{', '.join(self.classifier.classes[:12])}...)"
            )
        self.index = {c: self.classifier.classes.index(c) for c in classes}
        dim = self.features(torch.zeros(1, 3, 64, 64, device=device)).shape[1]
        zero = torch.zeros(1, dim, device=device, requires_grad=True)
        logits = self.classifier.forward_head(zero)[0]
        rows = [
            torch.autograd.grad(logits[k], zero, retain_graph=True)[0][0]
            for k in range(len(logits))
        ]
        self.head = torch.stack(rows).detach()  # (K, D): w_k for every class

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [-1, 1], (B, 3, H, W), differentiably."""
        images = ((pixels.clamp(-1, 1) + 1.0) * 127.5).permute(0, 2, 3, 1)
        x = self.classifier.preprocessing(images, self.classifier.device)
        return self.classifier.forward_features(x)

    def weights(self, classes: list[str] | Any) -> torch.Tensor:
        """(B, D): w_k of each image's class."""
        return self.head[[self.index[c] for c in classes]]
