"""The PyTorch and ONNX runners refuse request parameters they do not know with a 422 naming
them, as the transformers runners do (they know none yet)."""

from __future__ import annotations

import orjson
import pytest

np = pytest.importorskip("numpy")  # the pytorch / onnx extras

from servectl.handler import Handler  # noqa: E402
from servectl.outcome import Failure, Reply  # noqa: E402
from servectl.runners.onnx import OnnxRunner  # noqa: E402
from servectl.runners.pytorch import PyTorchRunner  # noqa: E402
from servectl.runners.tensors import Row, TensorRunner, TensorSpec  # noqa: E402
from servectl.worker.batch import BatchRunner  # noqa: E402
from servectl.worker.messages import Request  # noqa: E402


class Doubler(TensorRunner):
    def run_batch(self, feeds: Row) -> dict[str, object]:
        return {"y": feeds["x"] * 2}


def answer(body: dict) -> Failure | Reply:
    runner = Doubler([TensorSpec("x", np.dtype("float32"), (None, 4))], None)
    outcome = BatchRunner(Handler(runner, "doubler", runner=runner), 8).run(
        [Request(0, "r", orjson.dumps(body), "predict")]
    )
    result = outcome[0].outcome
    assert isinstance(result, Failure | Reply)
    return result


def test_unknown_parameters_are_a_422_naming_them() -> None:
    bad = answer({"inputs": [[1, 2, 3, 4]], "parameters": {"foo": 1, "bar": 2}})
    assert isinstance(bad, Failure) and bad.status == 422
    assert bad.message == "invalid parameters: unknown parameters ['bar', 'foo']; allowed: []"
    assert bad.detail[0]["loc"] == ["parameters"]
    ok = answer({"inputs": [[1, 2, 3, 4]], "parameters": {}})
    assert isinstance(ok, Reply) and orjson.loads(ok.body) == {"outputs": [[2.0, 4.0, 6.0, 8.0]]}


def test_onnx_and_pytorch_decode_as_every_tensor_runner() -> None:
    assert OnnxRunner.decode is TensorRunner.decode and PyTorchRunner.decode is TensorRunner.decode
