"""A tiny PyTorch module for the built-in backend examples and tests (needs torch)."""

from __future__ import annotations

import torch


class TinyNet(torch.nn.Module):
    """4 features in, 3 scores out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(torch.relu(self.fc1(x)))
        return out


def build_model() -> TinyNet:
    """The factory `model.factory: servectl.examples.tiny_net:build_model` names."""
    return TinyNet()
