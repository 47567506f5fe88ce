"""servectl's side: the trivial x**2 handler, untyped to match the other apps' work."""

example = {"x": 4.0}


def predict(batch: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{"y": item["x"] ** 2} for item in batch]
