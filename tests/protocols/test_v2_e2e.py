"""Open Inference Protocol (V2) end to end: httpx against the server, compared to onnxruntime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TYPES = {  # V2 datatype -> (ONNX element type, numpy dtype, sample rows)
    "BOOL": (onnx.TensorProto.BOOL, np.bool_, [[True, False], [False, True]]),
    "INT8": (onnx.TensorProto.INT8, np.int8, [[-1, 2], [3, -4]]),
    "INT16": (onnx.TensorProto.INT16, np.int16, [[-300, 2], [3, 4]]),
    "INT32": (onnx.TensorProto.INT32, np.int32, [[70000, 2], [3, 4]]),
    "INT64": (onnx.TensorProto.INT64, np.int64, [[2**40, 2], [3, 4]]),
    "UINT8": (onnx.TensorProto.UINT8, np.uint8, [[255, 2], [3, 4]]),
    "UINT16": (onnx.TensorProto.UINT16, np.uint16, [[65535, 2], [3, 4]]),
    "UINT32": (onnx.TensorProto.UINT32, np.uint32, [[2**31, 2], [3, 4]]),
    "UINT64": (onnx.TensorProto.UINT64, np.uint64, [[2**40, 2], [3, 4]]),
    "FP16": (onnx.TensorProto.FLOAT16, np.float16, [[0.5, 1.5], [2.0, -1.0]]),
    "FP32": (onnx.TensorProto.FLOAT, np.float32, [[0.25, 1.5], [2.0, -1.0]]),
    "FP64": (onnx.TensorProto.DOUBLE, np.float64, [[0.1, 1e300], [2.0, -1.0]]),
    "BYTES": (onnx.TensorProto.STRING, np.object_, [["a", "bc"], ["", "d e"]]),
}


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Identity node per V2 datatype: `in_T` -> `out_T`, shape [-1, 2]."""
    from onnx import helper

    nodes, inputs, outputs = [], [], []
    for name, (elem, _, _) in TYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, ["batch", 2]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("v2") / "identity.onnx"
    onnx.save(model, str(path))
    return path


def v2_spec(path: Path, name: str) -> dict:
    return {
        "name": name,
        "model": {"backend": "onnx", "path": str(path)},
        "api": {"kind": "v2"},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 16},
    }


def test_typed_tensors_round_trip_and_metadata(serve, identity_model: Path) -> None:
    server = serve(v2_spec(identity_model, "identity"))
    assert httpx.get(server.url + "/v2").json()["name"] == "servectl"
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(server.url + "/v2/models/identity/ready").json() == {"name": "identity", "ready": True}
    meta = httpx.get(server.url + "/v2/models/identity").json()
    assert {"name": "in_INT64", "datatype": "INT64", "shape": [-1, 2]} in meta["inputs"]
    assert {"name": "out_BYTES", "datatype": "BYTES", "shape": [-1, 2]} in meta["outputs"]
    assert meta["platform"] == "onnxruntime_onnx"

    request = {
        "id": "req-1",
        "inputs": [
            {
                "name": f"in_{t}",
                "shape": [2, 2],
                "datatype": t,
                "data": [v for row in rows for v in row] if i % 2 else rows,
            }  # flat and nested alike
            for i, (t, (_, _, rows)) in enumerate(TYPES.items())
        ],
    }
    r = httpx.post(server.url + "/v2/models/identity/infer", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "identity" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    session = ort.InferenceSession(str(identity_model), providers=["CPUExecutionProvider"])
    feeds = {f"in_{t}": np.array(rows, dtype=dt) for t, (_, dt, rows) in TYPES.items()}
    direct = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    for t in TYPES:
        out = outputs[f"out_{t}"]
        assert out["datatype"] == t and out["shape"] == [2, 2]
        expected = direct[f"out_{t}"].ravel().tolist()
        if t == "BYTES":
            expected = [v.decode() if isinstance(v, bytes) else v for v in expected]
        if t.startswith("FP"):
            assert out["data"] == pytest.approx(expected), t
        else:
            assert out["data"] == expected, t

    only = dict(request, outputs=[{"name": "out_INT8"}])
    assert [o["name"] for o in httpx.post(server.url + "/v2/models/identity/infer", json=only).json()["outputs"]] == [
        "out_INT8"
    ]

    # tritonclient with binary tensor data, in and out, every datatype; half the inputs binary
    triton = pytest.importorskip("tritonclient.http")
    assert "binary_tensor_data" in httpx.get(server.url + "/v2").json()["extensions"]
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    inputs, wanted = [], []
    for i, (t, (_, dt, rows)) in enumerate(TYPES.items()):
        given = triton.InferInput(f"in_{t}", [2, 2], t)
        array = np.array([[v.encode() for v in row] for row in rows], dtype=np.object_) if t == "BYTES" else None
        given.set_data_from_numpy(array if array is not None else np.array(rows, dtype=dt), binary_data=i % 2 == 0)
        inputs.append(given)
        wanted.append(triton.InferRequestedOutput(f"out_{t}", binary_data=i % 3 != 0))
    result = client.infer("identity", inputs, outputs=wanted, request_id="bin-1")
    assert result.get_response()["id"] == "bin-1"
    for t in TYPES:
        got, expected = result.as_numpy(f"out_{t}"), direct[f"out_{t}"]
        if t == "BYTES":
            got = [v.decode() if isinstance(v, bytes) else v for v in got.ravel()]
            expected = [v.decode() if isinstance(v, bytes) else v for v in expected.ravel()]
            assert got == expected
        else:
            assert got.dtype == expected.dtype and got.shape == (2, 2), t
            np.testing.assert_array_equal(got, expected)
    # a framed body whose sizes do not add up is a 400 naming the problem
    tensor = {"name": "in_FP32", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
    head = json.dumps({"inputs": [tensor]}).encode()
    short = httpx.post(
        server.url + "/v2/models/identity/infer",
        content=head + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]


def test_errors_and_batching_across_clients(serve, models: Path) -> None:
    server = serve(v2_spec(models / "tiny_net.onnx", "tiny"))
    url = server.url + "/v2/models/tiny/infer"
    session = ort.InferenceSession(str(models / "tiny_net.onnx"), providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        url, json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row.tolist()}]}
                    )
                    for row in rows
                )
            )

    # an idle worker takes a request at once, so batches form only while it is busy: on a loaded
    # machine one volley can be served one by one; a few volleys (at most 5) must batch
    for _ in range(5):
        responses = asyncio.run(fire())
        served = np.array([r.json()["outputs"][0]["data"] for r in responses])
        np.testing.assert_allclose(served, session.run(None, {"x": rows})[0], rtol=1e-5, atol=1e-6)
        stats = httpx.get(server.url + "/info").json()["stats"]
        if stats["batches"] < stats["items"]:
            break
    assert stats["batches"] < stats["items"], "requests from many clients were batched"

    def error(body: dict, status: int) -> str:
        r = httpx.post(url, json=body)
        assert r.status_code == status, r.text
        assert isinstance(r.json()["error"], str)
        return r.json()["error"]

    assert "FP32 in the model, not INT64" in error(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}, 422
    )
    assert "does not fit shape" in error(
        {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, 422
    )
    assert "expects x [-1, 4]" in error(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 422
    )
    assert "unknown input 'y'" in error(
        {"inputs": [{"name": "y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 422
    )
    assert "unknown outputs" in error(
        {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "nope"}],
        },
        422,
    )
    assert error({"inputs": "nope"}, 422)
    missing = httpx.post(server.url + "/v2/models/other/infer", json={})
    assert missing.status_code == 404 and "other" in missing.json()["error"]
    assert httpx.get(server.url + "/v2/models/other").status_code == 404


def test_v2_needs_a_tensor_backend(tmp_path: Path) -> None:
    from servectl.spec import SpecError, load_spec

    path = tmp_path / "s.yaml"
    path.write_text("handler: h.py\napi:\n  kind: v2\n")
    with pytest.raises(SpecError, match=r"api\.kind 'v2' serves tensor models"):
        load_spec(path)


def test_tritonclient_versions_stats_and_errors(serve, models: Path) -> None:
    """NVIDIA's own client: JSON tensors on the plain and the versioned route, the model's
    statistics, and errors (401, unknown version) it can read (`str()` of its exception)."""
    triton = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    server = serve({**v2_spec(models / "tiny_net.onnx", "tiny"), "auth": {"api_keys": ["k1"]}})
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    key = {"Authorization": "Bearer k1"}
    meta = client.get_model_metadata("tiny", headers=key)
    assert meta["versions"] == ["1"] and client.is_model_ready("tiny", model_version="1", headers=key)
    rows = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(models / "tiny_net.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": rows}
    )[0]
    out_name = meta["outputs"][0]["name"]
    for version in ("", "1"):
        given = triton.InferInput("x", list(rows.shape), "FP32")
        given.set_data_from_numpy(rows, binary_data=False)
        wanted = [triton.InferRequestedOutput(out_name, binary_data=False)]
        result = client.infer("tiny", [given], model_version=version, outputs=wanted, headers=key)
        np.testing.assert_allclose(result.as_numpy(out_name), expected, rtol=1e-5, atol=1e-6)

    async def aio_infer() -> np.ndarray:
        """The asyncio client sends JSON alone as application/octet-stream, without the framing header."""
        aio = pytest.importorskip("tritonclient.http.aio")
        async with aio.InferenceServerClient(url=server.url.removeprefix("http://")) as async_client:
            given = aio.InferInput("x", list(rows.shape), "FP32")
            given.set_data_from_numpy(rows, binary_data=False)
            wanted = [aio.InferRequestedOutput(out_name, binary_data=False)]
            result = await async_client.infer("tiny", [given], outputs=wanted, headers=key)
            return result.as_numpy(out_name)

    np.testing.assert_allclose(asyncio.run(aio_infer()), expected, rtol=1e-5, atol=1e-6)
    stats = client.get_inference_statistics("tiny", headers=key)["model_stats"][0]
    assert stats["name"] == "tiny" and stats["inference_stats"]["success"]["count"] == 3
    assert stats["execution_count"] >= 1 and stats["inference_count"] == 3 and stats["last_inference"] > 0
    with pytest.raises(InferenceServerException) as denied:
        client.get_model_metadata("tiny")
    assert "API key" in str(denied.value)  # a V2 error body: tritonclient reads its message
    with pytest.raises(InferenceServerException) as versioned:
        client.get_model_metadata("tiny", model_version="2", headers=key)
    assert "version '2'" in str(versioned.value)
    for method, path, status in (("GET", "/v2/models/tiny/infer", 405), ("GET", "/v2/nothing", 404)):
        answer = httpx.request(method, server.url + path, headers=key)
        assert answer.status_code == status and isinstance(answer.json()["error"], str), answer.text
    labels = httpx.get(server.url + "/metrics", headers=key).text
    assert 'route="/v2/models/tiny"' in labels and 'route="/v2/models/tiny/stats"' in labels


def test_torchscript_metadata_from_the_example_lets_a_client_shape_its_input(serve, models: Path) -> None:
    """TorchScript records no shapes: running `model.example` once at setup gives V2 metadata
    real input shapes and output names, and a client that builds its request from the
    metadata alone gets an answer."""
    triton = pytest.importorskip("tritonclient.http")
    spec = {
        "name": "ts",
        "model": {"backend": "pytorch", "path": str(models / "tiny_net.ts"), "example": {"inputs": [[0.1] * 4]}},
        "api": {"kind": "v2"},
        "devices": {"accelerator": "cpu"},
    }
    server = serve(spec)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    meta = client.get_model_metadata("ts")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["output"] and meta["outputs"][0]["shape"][0] == -1
    given = []
    for tensor in meta["inputs"]:
        shape = [2 if d == -1 else d for d in tensor["shape"]]
        t = triton.InferInput(tensor["name"], shape, tensor["datatype"])
        t.set_data_from_numpy(np.ones(shape, dtype=np.float32))
        given.append(t)
    wanted = [triton.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
    answer = client.infer("ts", given, outputs=wanted).as_numpy("output")
    assert answer.shape == (2, *meta["outputs"][0]["shape"][1:])


def test_spec_declared_tensors_name_and_shape_a_torchscript_model(serve, models: Path) -> None:
    """With no example, `model.inputs`/`model.outputs` with shapes give the metadata; the
    declared output name is what the model's answer is called; a request off the declared
    shape is a 422 naming it."""
    triton = pytest.importorskip("tritonclient.http")
    spec = {
        "name": "declared",
        "model": {
            "backend": "pytorch",
            "path": str(models / "tiny_net.ts"),
            "inputs": [{"name": "features", "shape": [-1, 4]}],
            "outputs": [{"name": "scores", "shape": [-1, 3]}],
        },
        "api": {"kind": "v2"},
        "devices": {"accelerator": "cpu"},
    }
    server = serve(spec)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    meta = client.get_model_metadata("declared")
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
    given = triton.InferInput("features", [2, 4], "FP32")
    given.set_data_from_numpy(np.ones((2, 4), dtype=np.float32))
    assert client.infer("declared", [given]).as_numpy("scores").shape == (2, 3)
    wrong = httpx.post(
        server.url + "/v2/models/declared/infer",
        json={"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]},
    )
    assert wrong.status_code == 422 and "[-1, 4]" in wrong.json()["error"], wrong.text


def test_tritonclient_validation_ids_trailing_slash_and_statistics_of_every_model(shared_serve, models: Path) -> None:
    """An input given twice, or with a negative dimension, is a 400 naming it; no request id:
    no `id` in the answer (never `null`); numbers beyond FP32 or a 64-bit float are a 400
    naming the input; `GET /v2/` answers as `/v2` (no redirect); the statistics of every
    model (`get_inference_statistics()` with no name) are Triton's, as a model's are."""
    triton = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    server = shared_serve(v2_spec(models / "tiny_net.onnx", "tiny"))
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    rows = np.ones((2, 4), dtype=np.float32)

    def given() -> triton.InferInput:
        tensor = triton.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(rows, binary_data=False)
        return tensor

    assert "id" not in client.infer("tiny", [given()]).get_response()
    assert client.infer("tiny", [given()], request_id="r-1").get_response()["id"] == "r-1"

    with pytest.raises(InferenceServerException) as twice:
        client.infer("tiny", [given(), given()])
    assert twice.value.status() == "400" and "input 'x' is given more than once" in twice.value.message()
    negative = given()
    negative.set_shape([-1, 4])
    with pytest.raises(InferenceServerException) as dims:
        client.infer("tiny", [negative])
    assert dims.value.status() == "400" and "input 'x' has shape [-1, 4]" in dims.value.message()

    url = server.url + "/v2/models/tiny/infer"
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 1e39]}
    for body in (
        json.dumps({"inputs": [tensor]}).encode(),
        json.dumps({"inputs": [tensor]}).replace("1e+39", "1e999").encode(),
    ):
        sent = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert sent.status_code == 400, sent.text
        assert "input 'x': a value is out of range for FP32" in sent.json()["error"]

    slash = httpx.get(server.url + "/v2/")
    assert slash.status_code == 200 and slash.json() == httpx.get(server.url + "/v2").json()

    every = client.get_inference_statistics()["model_stats"]
    assert [s["name"] for s in every] == ["tiny"] and every[0]["version"] == "1"
    assert every[0]["inference_stats"]["success"]["count"] >= 2 and every[0]["inference_stats"]["fail"]["count"] >= 4
    assert every == client.get_inference_statistics("tiny")["model_stats"]
