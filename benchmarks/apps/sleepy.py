"""x**2 that takes SLEEPY_MS milliseconds per batch: a model whose compute the pipeline can hide."""

import os
import time

example = {"x": 4.0}
_PAUSE_S = float(os.environ.get("SLEEPY_MS", "1")) / 1000


def predict(batch: list[dict[str, float]]) -> list[dict[str, float]]:
    time.sleep(_PAUSE_S)
    return [{"y": item["x"] ** 2} for item in batch]
