"""KServe's own Python client (`kserve.InferenceRESTClient`, protocol "v2") against a real server:
health and model readiness, inference with JSON tensors and with binary tensor data, errors
that carry the server's message, and API keys sent as the client's per-call headers.

The client has no server or model metadata call (only live, ready, model ready, infer and V1's
explain), so metadata is left to test_v2_e2e.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

KEY = "kserve-client-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FRAMING = "inference-header-content-length"


@pytest.fixture(scope="module")
def add_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sum = a + b`, FP32 [-1, 4]."""
    from onnx import helper

    fp32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "add",
        [helper.make_tensor_value_info(name, fp32, ["batch", 4]) for name in ("a", "b")],
        [helper.make_tensor_value_info("sum", fp32, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("kserve") / "add.onnx"
    onnx.save(model, str(path))
    return path


def test_kserve_rest_client_against_v2_routes(serve, add_model: Path) -> None:
    server = serve(
        {
            "name": "adder",
            "model": {"backend": "onnx", "path": str(add_model)},
            "api": {"kind": "v2"},
            "devices": {"accelerator": "cpu"},
            "batching": {"max_batch_size": 8},
            "auth": {"api_keys": [KEY]},
        }
    )
    asyncio.run(_exercise(server.url))


def _json_input(name: str, array: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


def _binary_input(name: str, array: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)  # binary_data=True is the client's default
    return tensor


async def _exercise(url: str) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4) / 4
    b = np.array([[0.5, -1.0, 2.0, 1e6]] * 2, dtype=np.float32)
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
        # health: open paths, no key; model readiness needs the key (a 401 or 404 reads as not ready)
        assert await client.is_server_live(url) is True
        assert await client.is_server_ready(url) is True
        assert await client.is_model_ready(url, "adder", headers=AUTH) is True
        assert await client.is_model_ready(url, "adder") is False
        assert await client.is_model_ready(url, "nope", headers=AUTH) is False

        # JSON tensors in and out: one input from a plain list, one from numpy
        plain = InferInput("a", [2, 4], "FP32", data=a.ravel().tolist())
        seen: dict[str, str] = {}
        request = InferRequest("adder", [plain, _json_input("b", b)], request_id="json-1")
        result = await client.infer(url, request, model_name="adder", headers=AUTH, response_headers=seen)
        assert (result.id, result.model_name) == ("json-1", "adder")
        assert [(o.name, o.datatype, o.shape) for o in result.outputs] == [("sum", "FP32", [2, 4])]
        np.testing.assert_array_equal(result.get_output_by_name("sum").as_numpy(), a + b)
        assert FRAMING not in seen and seen["content-type"] == "application/json"

        # binary tensor data: `a` binary beside `b` as JSON, the output asked binary by name.
        # The client writes its framing headers into the headers mapping it is given: a copy each time.
        headers = dict(AUTH)
        seen = {}
        request = InferRequest(
            "adder",
            [_binary_input("a", a), _json_input("b", b)],
            request_id="bin-1",
            request_outputs=[RequestedOutput("sum", {"binary_data": True})],
        )
        result = await client.infer(url, request, model_name="adder", headers=headers, response_headers=seen)
        assert headers["content-type"] == "application/octet-stream" and int(headers[FRAMING]) > 0
        assert seen["content-type"] == "application/octet-stream"
        assert int(seen["content-length"]) - int(seen[FRAMING]) == (a + b).nbytes  # the output came binary
        assert result.id == "bin-1"
        np.testing.assert_array_equal(result.get_output_by_name("sum").as_numpy(), a + b)

        # both inputs binary, every output binary by the request's binary_data_output; X-API-Key this time
        seen = {}
        request = InferRequest(
            "adder",
            [_binary_input("a", a[:1]), _binary_input("b", b[:1])],
            parameters={"binary_data_output": True},
        )
        result = await client.infer(url, request, model_name="adder", headers={"X-API-Key": KEY}, response_headers=seen)
        assert int(seen["content-length"]) - int(seen[FRAMING]) == (a[:1] + b[:1]).nbytes
        np.testing.assert_array_equal(result.get_output_by_name("sum").as_numpy(), a[:1] + b[:1])

        # errors: the client raises httpx.HTTPStatusError whose text carries the server's message
        async def refused(model: str, inputs: list[InferInput], headers: dict | None) -> httpx.HTTPStatusError:
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await client.infer(url, InferRequest(model, inputs), model_name=model, headers=headers)
            return caught.value

        good = [_json_input("a", a), _json_input("b", b)]
        error = await refused("nope", good, dict(AUTH))
        assert error.response.status_code == 404
        assert "model 'nope' is not served here" in str(error) and "404 Not Found" in str(error)

        error = await refused("adder", good, None)
        assert error.response.status_code == 401
        assert "missing or wrong API key" in str(error)
        error = await refused("adder", good, {"Authorization": "Bearer not-the-key"})
        assert error.response.status_code == 401 and "missing or wrong API key" in str(error)

        short = InferInput("a", [2, 4], "FP32", data=[1.0, 2.0, 3.0])  # 3 values for a [2, 4] tensor
        error = await refused("adder", [short, _json_input("b", b)], dict(AUTH))
        assert error.response.status_code == 422  # servectl's answer to inputs that don't fit (V2 leaves it open)
        assert "input 'a': data does not fit shape [2, 4]" in str(error)
        assert error.response.json()["error"] in str(error)
