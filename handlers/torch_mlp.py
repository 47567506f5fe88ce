"""A class handler around a small PyTorch model, placed on the worker's own device.

The weights are made from a fixed seed in `setup`, so the example needs no download; a
real handler would `torch.load` its checkpoint there. Needs the `torch` extra.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class Features(BaseModel):
    features: list[float] = Field(min_length=4, max_length=4, description="Four input features.")


class Scores(BaseModel):
    scores: list[float]
    label: int


class TinyMLP:
    example: ClassVar[dict[str, list[float]]] = {"features": [0.1, 0.2, 0.3, 0.4]}

    def setup(self, device: str, spec: Any) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.device = torch.device(device)
        self.model = (
            torch.nn.Sequential(
                torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(dim=-1)
            )
            .to(self.device)
            .eval()
        )

    def decode(self, request: Features) -> list[float]:
        return request.features

    def batch(self, items: list[list[float]]) -> Any:
        return self.torch.tensor(items, dtype=self.torch.float32, device=self.device)

    def predict(self, batch: Any) -> Any:
        with self.torch.inference_mode():
            return self.model(batch).cpu()

    def unbatch(self, output: Any) -> list[list[float]]:
        return output.tolist()

    def encode(self, output: list[float]) -> Scores:
        return Scores(scores=output, label=max(range(len(output)), key=output.__getitem__))
