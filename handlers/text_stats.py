"""A module handler with typed request and response: word statistics and a lexicon sentiment.

Shows the whole contract with plain functions: `setup` loads a resource once per worker,
`decode` validates (through its pydantic type), `predict` works on a batch, `encode` shapes
the answer. Pure Python, so it serves anywhere.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

example = {"text": "servectl makes serving models simple and fast"}

_lexicon: dict[str, float] = {}


class TextRequest(BaseModel):
    text: str = Field(min_length=1, max_length=100_000, description="Text to analyse.")


class TextStats(BaseModel):
    words: int
    characters: int
    sentiment: float = Field(description="-1 (negative) .. 1 (positive)")


def setup(device: str, spec: object) -> None:
    _lexicon.update({"good": 1, "great": 1, "simple": 0.5, "fast": 0.5, "bad": -1, "slow": -0.5, "broken": -1})


def decode(request: TextRequest) -> str:
    return request.text


def predict(batch: list[str]) -> list[tuple[int, int, float]]:
    out = []
    for text in batch:
        words = text.lower().split()
        scores = [_lexicon[w] for w in words if w in _lexicon]
        out.append((len(words), len(text), sum(scores) / len(scores) if scores else 0.0))
    return out


def encode(output: tuple[int, int, float]) -> TextStats:
    words, chars, sentiment = output
    return TextStats(words=words, characters=chars, sentiment=sentiment)
