"""`/v1/embeddings`: each input is one item, batched with other requests' items."""

from __future__ import annotations

import base64
import struct
from typing import Any

from servectl.protocols.openai.lm import LanguageModel
from servectl.protocols.openai.schemas import EmbeddingRequest, EmbeddingResponse
from servectl.sdk import InvalidInput, Many


class Embeddings:
    """`/v1/embeddings`: each input string is one item, batched with other requests' items."""

    response_model = EmbeddingResponse

    def __init__(self, lm: LanguageModel, model_name: str) -> None:
        self.lm = lm
        self.model_name = model_name
        self.example = {"model": model_name, "input": ["servectl serves models.", "One YAML file."]}

    def decode(self, request: EmbeddingRequest) -> Many:
        if request.model != self.model_name:
            msg = f"The model `{request.model}` does not exist; this server serves `{self.model_name}`"
            raise InvalidInput(msg, "model", status=404)
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts:
            raise InvalidInput("input must not be empty", "input", status=400)
        if request.dimensions is not None and request.dimensions > self.lm.width:
            raise InvalidInput(f"dimensions must be at most {self.lm.width} for this model", "dimensions", status=400)
        return Many(zip(texts, [request] * len(texts), self.lm.count(texts), strict=True))

    def predict(self, batch: list[tuple[str, EmbeddingRequest, int]]) -> list[Any]:
        vectors = self.lm.embed([text for text, _, _ in batch])
        return [(vec, request, n) for vec, (_, request, n) in zip(vectors, batch, strict=True)]

    def encode(self, outputs: list[tuple[list[float], EmbeddingRequest, int]]) -> dict[str, Any]:
        data = []
        request = outputs[0][1]
        for i, (vec, _, _) in enumerate(outputs):
            if request.dimensions:
                vec = vec[: request.dimensions]
                norm = sum(v * v for v in vec) ** 0.5 or 1.0
                vec = [v / norm for v in vec]
            embedding: Any = vec
            if request.encoding_format == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(n for _, _, n in outputs)
        return {
            "object": "list",
            "data": data,
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
