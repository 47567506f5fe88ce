"""transformers models to ONNX: token ids in, the runner's numbers out.

ONNX has no tokenizer, so the exported model takes what the tokenizer gives (`input_ids`,
`attention_mask`, `token_type_ids` where it makes them), batch and sequence axes dynamic.
Its output is what the transformers runner computes before it formats an answer:
feature-extraction gives `embeddings` (mean-pooled under the mask, L2-normalised when
`model.normalize`), text-classification gives `logits` (softmax of a row: the runner's
scores; the label of each column is in the ONNX metadata `id2label`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from servectl.convert.common import ConvertError, Export, Tensors, export_module, first_line
from servectl.spec import Spec

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE_TEXTS = [
    "servectl serves models from one yaml file",
    "a worker",
    "the quick brown fox jumps over the lazy dog, then batches form while the workers are busy",
]


class Embeddings(torch.nn.Module):
    """feature-extraction as the runner computes it: the mean of the token vectors under the mask."""

    def __init__(self, model: Any, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


class Logits(torch.nn.Module):
    """text-classification's logits (the runner's scores are their softmax)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        return logits


def export_text_model(spec: Spec, out: Path) -> Export:
    """Load the model and tokenizer as the runner does (CPU, float32), export the task's
    module with dynamic batch and sequence axes, and tokenize the samples to check it."""
    task = spec.model.task
    if task == "text-generation":
        raise ConvertError(
            "task text-generation is not supported by convert: a generating model needs its decoding loop and "
            "past key values, which the onnx backend does not run; serve it with backend transformers"
        )
    from servectl.runners.transformers import RUNNERS

    assert task is not None
    source = spec.model_copy(update={"model": spec.model.model_copy(update={"dtype": "float32"})})
    runner = RUNNERS[task](source)
    try:
        runner.setup("cpu", source)
    except Exception as exc:
        raise ConvertError(f"the model did not load: {first_line(exc)}") from None
    texts = _example_texts(spec.model.example)
    batches = [texts or SAMPLE_TEXTS[:2], SAMPLE_TEXTS]
    tokens = [runner.tokenizer(b, padding=True, truncation=True, max_length=runner.context) for b in batches]
    names = [n for n in TOKEN_INPUTS if n in tokens[0]]
    if "input_ids" not in names or "attention_mask" not in names:
        raise ConvertError(f"the tokenizer gives {sorted(tokens[0])}: convert needs input_ids and attention_mask")
    samples: list[Tensors] = [{n: np.asarray(t[n], dtype=np.int64) for n in names} for t in tokens]
    module: torch.nn.Module
    if task == "feature-extraction":
        module, output = Embeddings(runner.model, spec.model.normalize).eval(), "embeddings"
    else:
        module, output = Logits(runner.model).eval(), "logits"
    expected = []
    for sample in samples:
        with torch.inference_mode():
            expected.append({output: module(*(torch.from_numpy(sample[n]) for n in names)).float().numpy()})
    args = tuple(torch.from_numpy(samples[-1][n]) for n in names)
    axes = [{0: "batch", 1: "sequence"} for _ in names]
    exporter = export_module(module, args, out, names, [output], axes)
    first = runner.tokenizer(batches[0][0], truncation=True, max_length=runner.context)  # unpadded
    labels = getattr(runner.model.config, "id2label", None)
    if task == "text-classification" and labels:
        _metadata(out, {"id2label": json.dumps({str(k): v for k, v in labels.items()})})
    described = [
        f"{'model.example' if texts and i == 0 else 'sample texts'}: {len(b)} text{'s' if len(b) > 1 else ''}, "
        f"padded to {samples[i]['input_ids'].shape[1]} tokens"
        for i, b in enumerate(batches)
    ]
    return Export(
        exporter,
        samples,
        expected,
        described,
        example={"inputs": {n: [list(first[n])] for n in names}},
        pad=0,
        notes=_notes(spec, task),
        usage=[
            *_usage(spec, names, output, labels if task == "text-classification" else None, runner.context),
            f"model.example: the tokens of {batches[0][0]!r}.",
        ],
    )


def _example_texts(example: Any) -> list[str]:
    """The texts of a `model.example` ({"inputs": a text or a list of texts}), if any."""
    inputs = example.get("inputs") if isinstance(example, dict) else None
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
        return list(inputs)
    return []


def _metadata(out: Path, props: dict[str, str]) -> None:
    """Key-value metadata added to the ONNX file (its weights, in it or beside it, untouched)."""
    import onnx

    model = onnx.load(str(out), load_external_data=False)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))


def _notes(spec: Spec, task: str) -> list[str]:
    notes = ["the ONNX model takes token ids, not text: tokenize with the tokenizer in " + str(spec.model_path())]
    if task == "feature-extraction":
        state = "normalised" if spec.model.normalize else "not normalised"
        notes.append(f"embeddings are {state} (model.normalize, fixed at export: no per-request parameter)")
    if spec.model.dtype != "float32":
        notes.append(f"exported in float32: model.dtype {spec.model.dtype} is a setting of the transformers runner")
    return notes


def _usage(spec: Spec, names: list[str], output: str, labels: Any, context: int) -> list[str]:
    """How to call the served model, for the written spec's header."""
    lines = [
        f"Takes token ids: tokenize with the tokenizer in {spec.model_path()} (truncate to {context} tokens)",
        'and send {"inputs": {' + ", ".join(f'"{n}": [[...]]' for n in names) + "}}",
        "(e.g. dict(tokenizer(texts, padding=True, truncation=True))); model.pad 0 lets texts of",
        f"different lengths batch together. Returns {output!r} per text",
    ]
    if output == "embeddings":
        lines[-1] += " (mean-pooled" + (", L2-normalised)." if spec.model.normalize else ").")
    elif labels:
        lines[-1] += "; softmax gives the scores of labels " + ", ".join(f"{k}: {v}" for k, v in labels.items())
    return lines
