"""Built-in transformers runners: feature-extraction, text-classification, text-generation.

Models load from a local folder only (workers set HF_HUB_OFFLINE=1). Tokenization is
batched, padded to the longest text in the batch and truncated to the context
(`model.max_length`, by default the model's own limit). Text generation runs on the token
engine (`runners.engine`): requests join and leave the running batch between steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from servectl.runners.engine import Job, TokenEngine
from servectl.runners.sequence import Prompt, Sequence
from servectl.sdk import Final, InvalidInput, Many, Sampling
from servectl.spec import Spec

Item = tuple[str, dict[str, Any]]  # one text and its request's parameters


class TextRequest(BaseModel):
    inputs: str | list[str] = Field(description="A text, or a list of texts (each one item).")
    parameters: dict[str, Any] = Field(default_factory=dict)


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingParameters(_Parameters):
    normalize: bool | None = Field(None, description="L2-normalise (default: model.normalize).")


class ClassificationParameters(_Parameters):
    top_k: int | None = Field(None, ge=1, description="Labels returned per text (default: model.top_k).")


class GenerationParameters(_Parameters):
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens to generate at most: less than the context (else 400 context_length_exceeded); a long "
        "prompt keeps its last tokens to leave room for them. Default: model.max_new_tokens, cut to the room left.",
    )
    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    do_sample: bool | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    return_full_text: bool | None = Field(None, description="Prefix the prompt to the answer (default: true).")


def _request_model(parameters: type[_Parameters], name: str) -> type[TextRequest]:
    """The documented request of a runner: its own parameters, no others."""
    return create_model(name, __base__=TextRequest, parameters=(parameters, Field(default_factory=parameters)))


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
        self.context = spec.model.max_length or model_context(self.model, self.tokenizer)

    def load(self, path: str) -> Any:
        raise NotImplementedError

    def decode(self, request: TextRequest) -> Item | Many:
        if isinstance(request.parameters, BaseModel):  # the runner's own request model
            request = TextRequest(inputs=request.inputs, parameters=request.parameters.model_dump(exclude_none=True))
        unknown = set(request.parameters) - self.allowed_parameters
        if unknown:
            raise InvalidInput(
                f"unknown parameters {sorted(unknown)}; allowed: {sorted(self.allowed_parameters)}", "parameters"
            )
        if isinstance(request.inputs, str):
            return (request.inputs, request.parameters)
        return Many((text, request.parameters) for text in request.inputs)

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.context, return_tensors="pt").to(
            self.device
        )

    def encode(self, output: Any) -> TextResponse:
        return TextResponse(outputs=output)


class FeatureExtraction(TextRunner):
    """Mean-pooled token embeddings, L2-normalised unless `normalize` is false."""

    allowed_parameters = frozenset({"normalize"})
    request_model = _request_model(EmbeddingParameters, "FeatureExtractionRequest")

    def load(self, path: str) -> Any:
        from transformers import AutoModel

        return AutoModel.from_pretrained(path, local_files_only=True)

    def predict(self, batch: list[Item]) -> list[list[float]]:
        normalize = [bool(params.get("normalize", self.spec.model.normalize)) for _, params in batch]
        return self.pool(self.tokenize([text for text, _ in batch]), normalize)

    def pool(self, tokens: Any, normalize: list[bool]) -> list[list[float]]:
        """Mean of the token vectors under the attention mask, L2-normalised where asked."""
        torch = self.torch
        with torch.inference_mode():
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return [(normed[i] if norm else pooled[i]).float().cpu().tolist() for i, norm in enumerate(normalize)]


class TextClassification(TextRunner):
    """Labels with softmax scores, best first; `top_k` of them per text."""

    allowed_parameters = frozenset({"top_k"})
    request_model = _request_model(ClassificationParameters, "TextClassificationRequest")

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
    """Continues a prompt; each item joins the engine's running batch with its own parameters."""

    example: ClassVar[Any] = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 8}}
    allowed_parameters = frozenset({"max_new_tokens", "temperature", "top_p", "do_sample", "seed", "return_full_text"})
    request_model = _request_model(GenerationParameters, "TextGenerationRequest")

    def load(self, path: str) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True)

    def setup(self, device: str, spec: Spec) -> None:
        super().setup(device, spec)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        b = spec.batching
        self.engine = TokenEngine(
            self.model, self.tokenizer, self.context, b.max_batch_size, b.max_batch_tokens, static=not b.continuous
        )

    def sequence(
        self, prompt: Prompt, sampling: Sampling, asked: bool = True, field: str = "prompt", truncate: bool = False
    ) -> Sequence:
        """A sequence for the engine. A prompt that leaves no room in the context, or one plus
        the `max_tokens` the client `asked` for that does not fit, is a 400 (OpenAI's
        `context_length_exceeded`); a default `max_tokens` is cut to the room left. With
        `truncate` (the predict route) a long prompt keeps its last tokens instead, as it does
        with `sampling.truncate_prompt_tokens`."""
        ids = list(prompt) if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        vocab = self.model.get_input_embeddings().num_embeddings
        if any(not 0 <= i < vocab for i in ids):
            raise InvalidInput(f"token ids must be in [0, {vocab})", field, status=400)
        if not ids:  # an empty prompt starts from the beginning-of-text token
            ids = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.engine.pad]
        keep = sampling.truncate_prompt_tokens  # vLLM's: the last k tokens; -1: those that fit
        if keep is not None:
            ids = ids[-(keep if keep > 0 else max(1, self.context - sampling.max_tokens)) :]
        if truncate:
            ids = ids[-(self.context - 1) :]
        wanted = len(ids) + sampling.max_tokens
        if len(ids) >= self.context or (asked and wanted > self.context):
            raise InvalidInput(
                f"This model's maximum context length is {self.context} tokens. However, you requested {wanted} "
                f"tokens ({len(ids)} in the prompt, {sampling.max_tokens} for the completion). Please reduce the "
                "length of the prompt or of the completion.",
                field,
                status=400,
                code="context_length_exceeded",
            )
        sampling.max_tokens = min(sampling.max_tokens, self.context - len(ids))
        return Sequence(sampling, ids, len(ids))

    def generation_job(self, decoded: Item | Many) -> Job:
        items = list(decoded) if isinstance(decoded, Many) else [decoded]
        seqs = [self._predict_sequence(text, params) for text, params in items]
        return TextJob(self.engine, items, seqs, many=isinstance(decoded, Many))

    def _predict_sequence(self, text: str, params: dict[str, Any]) -> Sequence:
        """The predict route: a long prompt keeps its last tokens, leaving room for the
        `max_new_tokens` asked (else the default gets the room left). Asking for more than the
        context holds beside one prompt token is a 400 naming `parameters.max_new_tokens`."""
        sampling = self._sampling(params)
        if "max_new_tokens" not in params:
            return self.sequence(text, sampling, False, "inputs", truncate=True)
        asked = sampling.max_tokens
        if asked >= self.context:
            raise InvalidInput(
                f"max_new_tokens is {asked}, but this model's maximum context length is {self.context} tokens, "
                f"prompt included: ask for at most {self.context - 1}",
                "parameters.max_new_tokens",
                status=400,
                code="context_length_exceeded",
            )
        ids = self.tokenizer(text)["input_ids"][-(self.context - asked) :]
        return self.sequence(ids, sampling, True, "inputs")

    def _sampling(self, params: dict[str, Any]) -> Sampling:
        sample = bool(params.get("do_sample", float(params.get("temperature", 0)) > 0))
        return Sampling(
            max_tokens=int(params.get("max_new_tokens", self.spec.model.max_new_tokens)),
            temperature=float(params.get("temperature", 1.0)) if sample else 0.0,
            top_p=float(params.get("top_p", 1.0)),
            seed=int(params["seed"]) if "seed" in params else None,
        )


class TextJob:
    """A predict-route request's generation: one answer once all its items are done."""

    def __init__(self, engine: TokenEngine, items: list[Item], seqs: list[Sequence], many: bool) -> None:
        self.engine = engine
        self.items = items
        self.seqs = seqs
        self.many = many
        engine.add(seqs)

    def progress(self) -> Any:
        if not all(seq.done for seq in self.seqs):
            return None
        for seq in self.seqs:
            if seq.error is not None:
                raise seq.error
        outputs = [
            {"generated_text": (text if params.get("return_full_text", True) else "") + seq.text}
            for (text, params), seq in zip(self.items, self.seqs, strict=True)
        ]
        completion = sum(len(seq.ids) for seq in self.seqs)
        return Final(outputs if self.many else outputs[0], completion, sum(seq.prompt_tokens for seq in self.seqs))

    def close(self) -> None:
        self.engine.remove(self.seqs)


def model_context(model: Any, tokenizer: Any) -> int:
    """The longest input a model takes: its position table, or its tokenizer's limit."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 2048


RUNNERS: dict[str, type[TextRunner]] = {
    "feature-extraction": FeatureExtraction,
    "text-classification": TextClassification,
    "text-generation": TextGeneration,
}
