"""A small image classifier whose penultimate activations are the features of the Fréchet
classifier distance (:mod:`flowsci.feature_metrics`), trained here on the data it will judge.

No Inception weights can be downloaded, so flowsci trains this network per data set and
resolution (a network trained at one resolution misjudges another) and stores it beside the
data file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class FeatureClassifier(nn.Module):
    """Images (B, C, H, W) -> logits (B, num_classes); :meth:`features` gives the (B, feature_dim)
    activations before the last layer. Two 3×3 convolutions (32, 64 channels; 2×2 max pooling
    after the first), adaptive average pooling to at most 4×4, a ``feature_dim`` ReLU layer."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128, height: int = 28,
                 width: int = 28):
        super().__init__()
        if min(channels, num_classes, feature_dim, height, width) < 1 or num_classes < 2:
            raise ValueError(f"need channels, feature_dim, height, width >= 1 and num_classes >= 2, got "
                             f"{channels}, {feature_dim}, {height}, {width}, {num_classes}")
        pooled = (max(1, min(4, height // 2)), max(1, min(4, width // 2)))
        self.convolutions = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(pooled), nn.Flatten())
        self.hidden = nn.Linear(64 * pooled[0] * pooled[1], feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.hidden(self.convolutions(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int = 1500,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     progress: bool = False) -> FeatureClassifier:
    """Fit a :class:`FeatureClassifier` to images (N, C, H, W) and labels (N,) in
    [0, num_classes) with Adam and random ±1-pixel shifts; returns it in eval mode."""
    if images.dim() != 4 or len(images) != len(labels):
        raise ValueError(f"images must be (N, C, H, W) with one label each, got {tuple(images.shape)} "
                         f"and {len(labels)} labels")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FeatureClassifier(images.shape[1], num_classes, height=images.shape[2], width=images.shape[3])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in tqdm(range(steps), desc="feature classifier", unit="step", disable=not progress, leave=False):
        rows = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        dy, dx = torch.randint(-1, 2, (2,), generator=generator).tolist()
        batch = torch.roll(images[rows], shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(batch), labels[rows].long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()
