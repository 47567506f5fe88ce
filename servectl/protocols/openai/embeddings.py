"""`/v1/embeddings`: each input is one item, batched with other requests' items."""

from __future__ import annotations

import base64
import struct
from typing import Any

from servectl.protocols.openai.lm import LanguageModel
from servectl.protocols.openai.params import texts_or_ids
from servectl.protocols.openai.schemas import EmbeddingRequest, EmbeddingResponse, with_token_range
from servectl.sdk import Final, InvalidInput, Many


class Embeddings:
    """`/v1/embeddings`: each input string is one item, batched with other requests' items."""

    response_model = EmbeddingResponse

    def __init__(self, lm: LanguageModel, model_name: str) -> None:
        self.lm = lm
        self.model_name = model_name
        self.example = {"model": model_name, "input": ["servectl serves models.", "One YAML file."]}
        self.request_model = with_token_range(EmbeddingRequest, "input", lm.vocab)

    invalid_status = 400  # OpenAI answers invalid parameters with a 400

    def decode(self, request: EmbeddingRequest) -> Many:
        if request.model != self.model_name:
            msg = f"The model `{request.model}` does not exist; this server serves `{self.model_name}`"
            raise InvalidInput(msg, "model", status=404)
        inputs = texts_or_ids(request.input, "input")
        if request.dimensions is not None and request.dimensions > self.lm.width:
            raise InvalidInput(f"dimensions must be at most {self.lm.width} for this model", "dimensions", status=400)
        texts = [i for i in inputs if isinstance(i, str)]
        counts = iter(self.lm.count(texts))
        sizes = [next(counts) if isinstance(i, str) else len(i) for i in inputs]
        context = self.lm.context
        if context is not None and max(sizes) > context:
            raise InvalidInput(
                f"This model's maximum context length is {context} tokens, however you requested {max(sizes)} "
                "tokens in an input. Please reduce the length of the input.",
                "input",
                status=400,
                code="context_length_exceeded",
            )
        return Many(zip(inputs, [request] * len(inputs), sizes, strict=True))

    def predict(self, batch: list[tuple[str | list[int], EmbeddingRequest, int]]) -> list[Any]:
        texts = [i for i, _, _ in batch if isinstance(i, str)]
        ids = [i for i, _, _ in batch if not isinstance(i, str)]
        by_text = iter(self.lm.embed(texts) if texts else [])
        by_ids = iter(self.lm.embed_ids(ids) if ids else [])
        vectors = [next(by_text) if isinstance(i, str) else next(by_ids) for i, _, _ in batch]
        return [(vec, request, n) for vec, (_, request, n) in zip(vectors, batch, strict=True)]

    def encode(self, outputs: list[tuple[list[float], EmbeddingRequest, int]]) -> Final:
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
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return Final({"object": "list", "data": data, "model": self.model_name, "usage": usage}, prompt_tokens=tokens)
