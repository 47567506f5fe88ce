"""Ground truths computed in process, beside what a server answers."""

from __future__ import annotations

from pathlib import Path


def minilm_reference(path: Path, texts: list[str]) -> list[list[float]]:
    """MiniLM embeddings computed in-process one text at a time (no padding): the ground truth."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    out = []
    for text in texts:
        tokens = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        out.append(torch.nn.functional.normalize(hidden.mean(1), dim=1)[0].tolist())
    return out
