"""Handler discovery, hook checks, schemas, and the worker's per-request error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from servectl.handler import Handler, HandlerError, load_handler_object
from servectl.outcome import Failure, Reply
from servectl.worker.batch import BatchRunner
from servectl.worker.messages import Request


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


def test_an_overflowing_output_is_a_500_saying_non_finite_output_and_where() -> None:
    """x**2 of 1e308 is the handler's own infinity: still a 500, in words that say so; also
    beside an integer beyond 64 bits (written by pydantic-core, which would write `Infinity`)."""

    class Squares:
        def predict(self, batch: list[dict]) -> list[object]:
            # x * x, not x ** 2: a Python float's power raises OverflowError where a product is inf
            return [{"y": item["x"] * item["x"], **({"big": 2**70} if item.get("big") else {})} for item in batch]

    answers = run(Squares(), b'{"x": 1e200}', b'{"x": 1e200, "big": true}', b'{"x": 3.0}')
    for answer in answers[:2]:
        assert isinstance(answer, Failure) and (answer.status, answer.kind) == (500, "handler_error"), answer
        assert "non-finite output" in answer.message and "at y" in answer.message, answer.message
    assert replied(answers[2]) == {"y": 9.0}


def test_a_number_beyond_a_float_in_a_request_is_a_400_naming_where() -> None:
    """1e999 is valid JSON that parses as infinity: the client's error, not the handler's."""

    class Echo:
        def predict(self, batch: list[object]) -> list[object]:
            return batch

    top, nested, negative, fine, big = run(
        Echo(),
        b'{"x": 1e999}',
        b'{"a": [1, {"b": [[1.0, 2.0], [3.0, 1E+400]]}]}',
        b"[-1e999]",
        b"[1e308, 1e308, 1.7976931348623157e308]",
        b'{"n": 123456789012345678901234567890}',
    )
    for answer, where in ((top, "x"), (nested, "a.1.b.1.1"), (negative, "0")):
        assert isinstance(answer, Failure) and (answer.status, answer.kind) == (400, "validation_error"), answer
        assert answer.message.startswith(f"invalid {where}: ") and "64-bit float" in answer.message
        assert answer.detail[0]["loc"] == where.split(".")
    assert replied(fine) == [1e308, 1e308, 1.7976931348623157e308]  # finite, however their sum overflows
    assert isinstance(big, Reply) and json.loads(big.body) == {"n": 123456789012345678901234567890}


def test_out_of_range_finds_the_first_infinity_in_parsed_json() -> None:
    from servectl.worker.codec import out_of_range, parse

    inf = float("inf")
    assert out_of_range(parse(b'{"x": 2.0, "t": "1e999", "l": [[1, 2], [3, 4.5]], "n": null}')) is None
    assert out_of_range([1, 2**80, 3.0]) is None and out_of_range([[1.0, 2**2000]]) is None
    assert out_of_range(inf) == [] and out_of_range([1.0, -inf]) == [1]
    assert out_of_range({"a": [{"b": "s"}, {"b": [[0.5], [1.0, inf]]}]}) == ["a", 1, "b", 1, 1]
    assert out_of_range([[1.0], [2.0, "s", inf]]) == [1, 2] and out_of_range([True, inf]) == [1]


def test_an_out_of_range_number_answers_in_each_protocols_shape() -> None:
    from servectl.protocols.openai import PROTOCOL as OPENAI
    from servectl.protocols.v2 import PROTOCOL as V2

    class Echo:
        def predict(self, batch: list[object]) -> list[object]:
            return batch

    (answer,) = run(Echo(), b'{"temperature": 1e999}')
    assert isinstance(answer, Failure) and answer.status == 400
    error = orjson.loads(OPENAI.error_body(answer, "r0"))["error"]
    assert error["param"] == "temperature" and error["type"] == "invalid_request_error"
    assert "64-bit float" in error["message"]
    assert "temperature" in orjson.loads(V2.error_body(answer, "r0"))["error"]


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
