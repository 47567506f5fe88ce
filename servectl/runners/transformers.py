"""Built-in transformers runners: feature-extraction, text-classification, text-generation.

Models load from a local folder only (workers set HF_HUB_OFFLINE=1). Tokenization is
batched, padded to the longest text in the batch and truncated to `model.max_length`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from servectl.runners.generate import Sampling, generate_steps
from servectl.sdk import InvalidInput, Many
from servectl.spec import Spec

Item = tuple[str, dict[str, Any]]  # one text and its request's parameters


class TextRequest(BaseModel):
    inputs: str | list[str] = Field(description="A text, or a list of texts (each one item).")
    parameters: dict[str, Any] = Field(default_factory=dict)


class TextResponse(BaseModel):
    outputs: Any


class TextRunner:
    """Common set-up and request handling; subclasses load their model class and predict."""

    example: ClassVar[Any] = {"inputs": "servectl serves models from one YAML file."}
    allowed_parameters: frozenset[str] = frozenset()

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        if spec.model.example is not None:
            self.example = spec.model.example  # type: ignore[misc]

    def setup(self, device: str, spec: Spec) -> None:
        import torch
        from transformers import AutoTokenizer

        self.torch = torch
        self.device = torch.device(device)
        path = str(spec.model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = self.load(path).to(self.device, getattr(torch, spec.model.dtype)).eval()

    def load(self, path: str) -> Any:
        raise NotImplementedError

    def decode(self, request: TextRequest) -> Item | Many:
        unknown = set(request.parameters) - self.allowed_parameters
        if unknown:
            raise InvalidInput(
                f"unknown parameters {sorted(unknown)}; allowed: {sorted(self.allowed_parameters)}", "parameters"
            )
        if isinstance(request.inputs, str):
            return (request.inputs, request.parameters)
        return Many((text, request.parameters) for text in request.inputs)

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.spec.model.max_length, return_tensors="pt"
        ).to(self.device)

    def encode(self, output: Any) -> TextResponse:
        return TextResponse(outputs=output)


class FeatureExtraction(TextRunner):
    """Mean-pooled token embeddings, L2-normalised unless `normalize` is false."""

    allowed_parameters = frozenset({"normalize"})

    def load(self, path: str) -> Any:
        from transformers import AutoModel

        return AutoModel.from_pretrained(path, local_files_only=True)

    def predict(self, batch: list[Item]) -> list[list[float]]:
        torch = self.torch
        tokens = self.tokenize([text for text, _ in batch])
        with torch.inference_mode():
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out = []
        for i, (_, params) in enumerate(batch):
            row = normed[i] if params.get("normalize", self.spec.model.normalize) else pooled[i]
            out.append(row.float().cpu().tolist())
        return out


class TextClassification(TextRunner):
    """Labels with softmax scores, best first; `top_k` of them per text."""

    allowed_parameters = frozenset({"top_k"})

    def load(self, path: str) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)

    def predict(self, batch: list[Item]) -> list[list[dict[str, Any]]]:
        torch = self.torch
        with torch.inference_mode():
            probs = self.model(**self.tokenize([t for t, _ in batch])).logits.float().softmax(-1).cpu()
        labels = self.model.config.id2label
        out = []
        for row, (_, params) in zip(probs, batch, strict=True):
            k = min(int(params.get("top_k", self.spec.model.top_k)), len(row))
            scores, ids = row.topk(k)
            out.append([{"label": labels[int(i)], "score": float(s)} for s, i in zip(scores, ids, strict=True)])
        return out


class TextGeneration(TextRunner):
    """Continues a prompt; a batch generates together, each item with its own parameters."""

    example: ClassVar[Any] = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 8}}
    allowed_parameters = frozenset({"max_new_tokens", "temperature", "top_p", "do_sample", "seed", "return_full_text"})

    def load(self, path: str) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True)

    def setup(self, device: str, spec: Spec) -> None:
        super().setup(device, spec)
        self.tokenizer.padding_side = "left"  # generation continues at the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def predict(self, batch: list[Item]) -> list[dict[str, str]]:
        """One token loop for the batch (the same one the OpenAI routes use), each row with
        its own parameters."""
        settings = [self._sampling(params) for _, params in batch]
        prompts = [text for text, _ in batch]
        *_, last = generate_steps(self.model, self.tokenizer, prompts, settings, self.spec.model.max_length)
        states = [state for _, state in last]  # every step holds the rows' states; the last is final
        return [
            {"generated_text": (prompt if params.get("return_full_text", True) else "") + state.text}
            for prompt, (_, params), state in zip(prompts, batch, states, strict=True)
        ]

    def _sampling(self, params: dict[str, Any]) -> Sampling:
        sample = bool(params.get("do_sample", float(params.get("temperature", 0)) > 0))
        return Sampling(
            max_tokens=int(params.get("max_new_tokens", self.spec.model.max_new_tokens)),
            temperature=float(params.get("temperature", 1.0)) if sample else 0.0,
            top_p=float(params.get("top_p", 1.0)),
            seed=int(params["seed"]) if "seed" in params else None,
        )


RUNNERS: dict[str, type[TextRunner]] = {
    "feature-extraction": FeatureExtraction,
    "text-classification": TextClassification,
    "text-generation": TextGeneration,
}
