"""The V2 adapter in-process (no server): request validation, number ranges, the answer's id;
and the same ranges on a tensor runner's own request shape (`{"inputs": ...}`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from servectl.handler import Handler  # noqa: E402
from servectl.outcome import Failure, Reply  # noqa: E402
from servectl.protocols.v2.adapter import V2Adapter  # noqa: E402
from servectl.runners.tensors import TensorRequest, TensorSpec, decode_tensors  # noqa: E402
from servectl.sdk import InvalidInput  # noqa: E402
from servectl.worker.batch import BatchRunner  # noqa: E402
from servectl.worker.messages import Request  # noqa: E402


class Doubler:
    """A tensor runner: `y = 2 * x` (FP32, [-1, 2]), `n` (INT32, [-1, 1]) passed through as `m`."""

    inputs = [TensorSpec("x", np.dtype(np.float32), (None, 2)), TensorSpec("n", np.dtype(np.int32), (None, 1))]
    output_names = ["y", "m"]

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with np.errstate(over="ignore"):
            return [{"y": row["x"] * np.float32(2), "m": row["n"]} for row in rows]


def infer(*bodies: dict[str, Any]) -> list[Reply | Failure]:
    runner = BatchRunner(Handler(V2Adapter(Doubler(), "doubler"), "v2"), 16)  # type: ignore[arg-type]
    items = [Request(i, f"r{i}", json.dumps(b).encode(), "v2") for i, b in enumerate(bodies)]
    return [r.outcome for r in sorted(runner.run(items), key=lambda r: r.key)]  # type: ignore[misc]


def tensors(x: list[Any], n: list[Any] | None = None, x_shape: list[int] | None = None) -> list[dict[str, Any]]:
    rows = len(x) // 2
    return [
        {"name": "x", "shape": x_shape or [rows, 2], "datatype": "FP32", "data": x},
        {"name": "n", "shape": [rows, 1], "datatype": "INT32", "data": n or [0] * rows},
    ]


def error(answer: Reply | Failure, status: int) -> str:
    assert isinstance(answer, Failure) and answer.status == status, answer
    return answer.message


def test_an_input_given_twice_is_a_400_naming_it() -> None:
    (twice,) = infer({"inputs": [*tensors([1.0, 2.0]), tensors([3.0, 4.0])[0]]})
    assert "input 'x' is given more than once" in error(twice, 400)


def test_a_negative_dimension_in_a_request_shape_is_a_400_naming_the_input() -> None:
    (negative,) = infer({"inputs": tensors([1.0, 2.0, 3.0, 4.0], [0, 0], x_shape=[-1, 2])})
    message = error(negative, 400)
    assert "input 'x' has shape [-1, 2]" in message and "negative" in message


def test_numbers_beyond_the_datatype_are_a_400_naming_the_input() -> None:
    """JSON has no infinity: 1e39 in FP32 (and 1e999 anywhere) only becomes one on conversion."""
    fp32, int_as_float, int32 = infer(
        {"inputs": tensors([1.0, 1e39])},
        {"inputs": tensors([1.0, 2.0], [1e10])},
        {"inputs": tensors([1.0, 2.0], [2**40])},
    )
    assert "input 'x': a value is out of range for FP32" in error(fp32, 400)
    assert "input 'n': a value is out of range for INT32" in error(int_as_float, 400)
    assert "input 'n': a value is out of range for INT32" in error(int32, 400)
    (fine,) = infer({"inputs": tensors([1.0, 1.5e38])})  # large float32s are fine (doubled: 3e38)
    assert isinstance(fine, Reply), fine


def test_1e999_in_a_json_tensor_is_a_400_naming_the_input() -> None:
    runner = BatchRunner(Handler(V2Adapter(Doubler(), "doubler"), "v2"), 16)  # type: ignore[arg-type]
    body = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 1e999]},'
    body += b' {"name": "n", "shape": [1, 1], "datatype": "INT32", "data": [0]}]}'
    (result,) = runner.run([Request(0, "r0", body, "v2")])
    assert "input 'x': a value is out of range for FP32" in error(result.outcome, 400)  # type: ignore[arg-type]


def test_the_answer_echoes_an_id_and_has_none_when_the_request_had_none() -> None:
    with_id, without = infer({"id": "req-7", "inputs": tensors([1.0, 2.0])}, {"inputs": tensors([1.0, 2.0])})
    assert isinstance(with_id, Reply) and isinstance(without, Reply)
    assert json.loads(with_id.body)["id"] == "req-7"
    answer = json.loads(without.body)
    assert "id" not in answer and answer["model_name"] == "doubler"
    assert {o["name"]: o["data"] for o in answer["outputs"]} == {"y": [2.0, 4.0], "m": [0]}


def test_an_output_that_overflows_is_a_500_saying_non_finite_output_and_naming_it() -> None:
    (doubled,) = infer({"inputs": tensors([1.0, 3e38])})  # 6e38 is beyond float32: inf
    message = error(doubled, 500)
    assert "non-finite output 'y'" in message and message.startswith("encode failed: ")
    binary = {"inputs": tensors([1.0, 3e38]), "parameters": {"binary_data_output": True}}
    (framed,) = infer(binary)  # binary data holds an infinity as it is
    assert isinstance(framed, Reply) and framed.json_length is not None


@pytest.mark.parametrize(
    ("dtype", "value", "name"),
    [(np.float32, 1e39, "float32"), (np.float16, 70000.0, "float16"), (np.int32, 2**40, "int32")],
)
def test_a_tensor_runners_request_beyond_its_dtype_is_a_400_naming_the_input(dtype: Any, value: Any, name: str) -> None:
    spec = TensorSpec("x", np.dtype(dtype), (None, 2))
    with pytest.raises(InvalidInput) as beyond:
        decode_tensors(TensorRequest(inputs={"x": [[1, value]]}), [spec])
    assert beyond.value.status == 400 and beyond.value.field == "inputs.x"
    assert f"input 'x': a value is out of range for {name}" in str(beyond.value)
    assert len(decode_tensors(TensorRequest(inputs={"x": [[1, 2]]}), [spec])) == 1
