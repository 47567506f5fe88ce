"""A typed test handler that can be slow on request: for generated clients (typed results,
422s, and 503s under a tiny max_queue)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

example = {"text": "hello"}


class Query(BaseModel):
    text: str = Field(min_length=1)
    sleep: float = Field(0.0, ge=0, le=5)


class Answer(BaseModel):
    upper: str
    length: int


def decode(query: Query) -> Query:
    return query


def predict(batch: list[Query]) -> list[str]:
    time.sleep(max(q.sleep for q in batch))
    return [q.text for q in batch]


def encode(text: str) -> Answer:
    return Answer(upper=text.upper(), length=len(text))
