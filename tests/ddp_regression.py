"""A deterministic regression domain trained by ``flowsci.training.train``.

Run by tests/test_distributed.py in one process and under torchrun; the objective has no
randomness, so the two must agree to float round-off.
Usage: python ddp_regression.py OUT_DIR [key=value ...]
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from flowsci.config import config_from_dict
from flowsci.data import DataSplits, InMemoryDataset
from flowsci.plugins import DomainBase, build_model, register_domain
from flowsci.training import train


@dataclasses.dataclass
class Settings:
    dim: int = 4
    n: int = 512


class Regression(DomainBase):
    name = "ddp_regression"
    Settings = Settings

    def build_data(self, cfg):
        g = torch.Generator().manual_seed(123)
        x = torch.randn(cfg.settings.n, cfg.settings.dim, generator=g)
        y = torch.sin(2 * x) + 0.5 * x.roll(1, dims=1)
        data = InMemoryDataset({"x": x, "y": y})
        return DataSplits(train=data, val=data, test=data)

    def build_model(self, cfg):
        return build_model(cfg.model.name, {"dim": cfg.settings.dim, **cfg.model.params})

    def build_objective(self, cfg):
        return self

    def loss(self, model, batch):
        x = batch["x"]
        return (model(x, torch.zeros(len(x))) - batch["y"]).pow(2).mean(), {}

    def evaluate(self, model, data, cfg):
        x, y = data.test.tensors["x"], data.test.tensors["y"]
        with torch.no_grad():
            return {"mse": float((model(x, torch.zeros(len(x))) - y).pow(2).mean())}


if __name__ == "__main__":
    register_domain(Regression)
    cfg = config_from_dict({"domain": "ddp_regression", "model": {"name": "mlp_velocity", "width": 32},
                            "train": {"steps": 20, "batch_size": 32, "lr": 0.01, "log_every": 1,
                                      "checkpoint_every": 10, "keep_checkpoints": 0}},
                           sys.argv[2:], source="ddp_regression.py")
    train(cfg, sys.argv[1], progress=False)
