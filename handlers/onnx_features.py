"""Pre- and post-processing around the built-in ONNX runner.

`decode` turns this API's request into the runner's `{"inputs": ...}`; `encode` turns the
runner's `{"outputs": ...}` into this API's answer. The runner does the model work.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

example = {"features": [0.1, 0.2, 0.3, 0.4]}
CLASSES = ("cat", "dog", "bird")


class Features(BaseModel):
    features: list[float] = Field(min_length=4, max_length=4)


class Prediction(BaseModel):
    label: str
    scores: list[float]


def decode(request: Features) -> dict[str, Any]:
    return {"inputs": [request.features]}


def encode(response: Any) -> Prediction:
    scores = response.outputs[0]
    return Prediction(label=CLASSES[max(range(len(scores)), key=scores.__getitem__)], scores=scores)
