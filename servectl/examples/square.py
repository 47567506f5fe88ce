"""The built-in quickstart model: y = x ** 2, batched, with typed request and response.

Pure Python on purpose: it serves on a fresh machine with no model download.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class SquareRequest(BaseModel):
    x: float = Field(description="The number to square.")


class SquareResponse(BaseModel):
    y: float


example = {"x": 4.0}


def decode(request: SquareRequest) -> float:
    return request.x


def predict(batch: list[float]) -> list[float]:
    return [x * x for x in batch]


def encode(output: float) -> SquareResponse:
    return SquareResponse(y=output)
