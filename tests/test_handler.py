"""Handler discovery, hook checks, schemas, and the worker's per-request error handling."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from servectl.handler import Handler, HandlerError, load_handler_object
from servectl.outcome import Failure, Reply
from servectl.runtime.batch import BatchRunner
from servectl.runtime.messages import Request


@pytest.fixture(autouse=True)
def _forget_handler_packages() -> Iterator[None]:
    """Each test writes its own `handlers` package: do not reuse another test's import."""
    yield
    for name in [m for m in sys.modules if m == "handlers" or m.startswith("handlers.")]:
        del sys.modules[name]


def make_module(tmp_path: Path, source: str, name: str = "myhandler") -> Path:
    pkg = tmp_path / "handlers"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    path = pkg / f"{name}.py"
    path.write_text(source)
    return path


CLASS_HANDLER = """
class Doubler:
    def __init__(self):
        self.factor = None
    def setup(self, device, spec):
        self.factor = 2
    def predict(self, batch):
        return [x * self.factor for x in batch]
"""


@pytest.mark.parametrize("ref", ["handlers/cls_h.py:Doubler", "handlers.cls_h:Doubler"])
def test_class_handler_by_path_or_module(tmp_path: Path, ref: str) -> None:
    make_module(tmp_path, CLASS_HANDLER, "cls_h")
    handler = Handler.load(ref, tmp_path)
    handler.setup("cpu", None)
    assert handler.unbatch(handler.predict([1, 2]), 2) == [2, 4]
    assert handler.info().hooks == ("setup", "predict")


def test_module_handler_and_setup_with_fewer_args(tmp_path: Path) -> None:
    make_module(
        tmp_path, "state = {}\ndef setup(device):\n    state['d'] = device\ndef predict(b):\n    return b\n", "mod_h"
    )
    handler = Handler.load("handlers/mod_h.py", tmp_path)
    handler.setup("cuda:0", object())
    assert handler.obj.state == {"d": "cuda:0"}


def test_missing_module_and_attribute_are_clear(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="not found"):
        load_handler_object("handlers/nope.py", tmp_path)
    with pytest.raises(HandlerError, match="not found"):
        load_handler_object("handlers_nope.mod", tmp_path)
    make_module(tmp_path, "def predict(b):\n    return b\n", "attr_h")
    with pytest.raises(HandlerError, match="no attribute 'Missing'"):
        load_handler_object("handlers.attr_h:Missing", tmp_path)


def test_import_error_inside_handler_is_reported(tmp_path: Path) -> None:
    make_module(tmp_path, "import not_a_real_package_xyz\n", "broken_h")
    with pytest.raises(HandlerError, match="not_a_real_package_xyz"):
        load_handler_object("handlers/broken_h.py", tmp_path)


def test_hook_signatures_are_checked(tmp_path: Path) -> None:
    make_module(tmp_path, "def predict(a, b):\n    return a\n", "sig_h")
    with pytest.raises(HandlerError, match="exactly one positional"):
        Handler.load("handlers/sig_h.py", tmp_path)
    make_module(tmp_path, "x = 1\n", "empty_h")
    with pytest.raises(HandlerError, match="none of predict"):
        Handler.load("handlers/empty_h.py", tmp_path)


class In(BaseModel):
    text: str
    n: int = 1


class Out(BaseModel):
    echo: str


class Typed:
    example = {"text": "hi"}

    def decode(self, request: In) -> str:
        return request.text * request.n

    def predict(self, batch: list[str]) -> list[str]:
        if "bad" in batch:
            raise RuntimeError("bad input")
        return batch

    def encode(self, output: str) -> Out:
        if output == "unserializable":
            return object()  # type: ignore[return-value]
        return Out(echo=output)


def test_pydantic_types_give_schemas() -> None:
    info = Handler(Typed(), "Typed").info()
    assert info.request_schema is not None and info.request_schema["required"] == ["text"]
    assert info.response_schema is not None and "echo" in info.response_schema["properties"]
    assert info.example == {"text": "hi"}


def run(handler: object, *bodies: bytes) -> list[Reply | Failure]:
    items = [Request(i, f"r{i}", b, "predict") for i, b in enumerate(bodies)]
    results = BatchRunner(Handler(handler, "h"), 16).run(items)
    assert sorted(r.key for r in results) == list(range(len(bodies)))
    answers = [r.outcome for r in sorted(results, key=lambda r: r.key)]
    assert all(isinstance(a, Reply | Failure) for a in answers)
    return answers  # type: ignore[return-value]


def replied(answer: Reply | Failure) -> object:
    assert isinstance(answer, Reply), answer
    return orjson.loads(answer.body)


def test_batch_runner_answers_each_request_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    answers = run(
        Typed(),
        b'{"text": "a", "n": 2}',
        b'{"text": ',
        b'{"n": "x"}',
        b'{"text": "bad"}',
        b'{"text": "unserializable"}',
    )
    ok, malformed, invalid, bad, unserializable = answers
    assert replied(ok) == {"echo": "aa"}
    assert isinstance(malformed, Failure) and (malformed.status, malformed.kind) == (400, "bad_request")
    assert malformed.message.startswith("malformed JSON: ")
    assert isinstance(invalid, Failure) and (invalid.status, invalid.kind) == (422, "validation_error")
    assert invalid.message == "invalid request: text, n"
    assert {tuple(d["loc"]) for d in invalid.detail} == {("text",), ("n",)}
    assert bad == Failure(500, "handler_error", "predict failed: RuntimeError: bad input")
    assert isinstance(unserializable, Failure) and unserializable.status == 500
    assert unserializable.message.startswith("serialize failed: ")
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "r3"]
    assert len(logged) == 1 and "h.predict failed" in logged[0].getMessage()


def test_nan_or_infinity_in_an_answer_is_a_500_naming_where_never_a_silent_null() -> None:
    """JSON has no NaN: orjson would write null, which the published schema does not allow."""

    class Floats:
        def predict(self, batch: list[dict]) -> list[object]:
            return [item["out"] if item["out"] != "nan" else {"scores": [0.5, float("nan")]} for item in batch]

    nan, null, fine = run(Floats(), b'{"out": "nan"}', b'{"out": null}', b'{"out": [1.5]}')
    assert isinstance(nan, Failure) and nan.status == 500
    assert "NaN or infinite number at scores[1]" in nan.message
    assert replied(null) is None and replied(fine) == [1.5]  # a real null, and a batch-mate, untouched


class WrongLength:
    def predict(self, batch: list[object]) -> list[object]:
        return batch[:-1]


def test_wrong_length_is_a_500_naming_handler_and_lengths() -> None:
    answers = run(WrongLength(), b"1", b"2", b"3")
    msg = "predict failed: HandlerError: h.predict returned 2 outputs for a batch of 3 inputs"
    assert answers == [Failure(500, "handler_error", msg)] * 3


class CustomBatch:
    def batch(self, items: list[int]) -> dict[str, list[int]]:
        return {"xs": items}

    def predict(self, batch: dict[str, list[int]]) -> dict[str, list[int]]:
        return {"ys": [x + 1 for x in batch["xs"]]}

    def unbatch(self, output: dict[str, list[int]]) -> list[int]:
        return output["ys"]


def test_custom_batch_and_unbatch() -> None:
    assert [replied(a) for a in run(CustomBatch(), b"1", b"41")] == [2, 42]
