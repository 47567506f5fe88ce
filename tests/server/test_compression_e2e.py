"""Compressed bodies end to end: `Content-Encoding: gzip` / `deflate` request bodies on a real
server (httpx, raw sockets, tritonclient's `request_compression_algorithm` on a V2 model), a
gzip bomb against `limits.max_body_mb`, codings servectl does not take, and answers
compressed for a client's `Accept-Encoding` above `server.gzip_min_bytes`."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.servers import connect, read_response
from support.specs import echo_llm_spec, toolbox_spec

SPEC = toolbox_spec(limits={"max_body_mb": 1}, server={"access_log": False})  # gzip_min_bytes: its default, 64 KiB
BIG_ECHO = list(range(30_000))  # an answer of ~180 KB


def rss_peak_kb(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def post(server, body: bytes, encoding: str, **headers: str) -> httpx.Response:
    sent = {"Content-Type": "application/json", "Content-Encoding": encoding, **headers}
    return httpx.post(server.url + "/predict", content=body, headers=sent, timeout=30)


def test_gzip_and_deflate_bodies_are_inflated_on_predict(shared_serve) -> None:
    server = shared_serve(SPEC)
    body = json.dumps({"x": 3}).encode()
    for encoding, packed in [
        ("gzip", gzip.compress(body)),
        ("x-gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),  # RFC 9110's deflate: zlib's format
        ("deflate", raw_deflate(body)),  # bare deflate data, as some clients send it
        ("identity", body),
    ]:
        r = post(server, packed, encoding)
        assert r.status_code == 200 and r.json()["y"] == 9.0, (encoding, r.text)
    # sent in pieces (chunked): inflated as it comes
    packed = gzip.compress(json.dumps({"x": 4, "echo": "a" * 500_000}).encode())
    pieces = iter([packed[i : i + 300] for i in range(0, len(packed), 300)])
    r = httpx.post(
        server.url + "/predict", content=pieces, headers={"Content-Encoding": "gzip", "Accept-Encoding": "identity"}
    )
    assert r.status_code == 200 and r.json()["y"] == 16.0 and len(r.json()["echo"]) == 500_000
    # head and body in one write (the express lane's kind of request), two pipelined
    one = gzip.compress(json.dumps({"x": 5}).encode())
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: {len(one)}\r\n\r\n"
    with connect(server) as sock:
        sock.sendall((head.encode() + one) * 2)
        for _ in range(2):
            status, _, answer = read_response(sock)
            assert status == 200 and json.loads(answer)["y"] == 25.0, answer
    # an uncompressed request is as before
    r = httpx.post(server.url + "/predict", json={"x": 2})
    assert r.status_code == 200 and r.json()["y"] == 4.0


def test_other_codings_are_415_and_bodies_that_do_not_inflate_400(shared_serve) -> None:
    server = shared_serve(SPEC)
    body = json.dumps({"x": 3}).encode()
    for encoding in ("br", "zstd", "gzip, br"):
        r = post(server, body, encoding)
        assert r.status_code == 415, (encoding, r.text)
        error = r.json()["error"]
        assert error["type"] == "unsupported_media_type" and repr(encoding) in error["message"], error
    corrupt = bytearray(gzip.compress(json.dumps({"x": 3, "pad": "z" * 2000}).encode()))
    corrupt[20:40] = b"\xff" * 20
    for encoding, packed in [("gzip", bytes(corrupt)), ("gzip", body), ("deflate", b"\x78\x9c" + b"\xff" * 30)]:
        r = post(server, packed, encoding)
        assert r.status_code == 400, (encoding, r.text)
        assert f"not valid {encoding} data" in r.json()["error"]["message"], r.text
    r = post(server, gzip.compress(body)[:-6], "gzip")  # cut short
    assert r.status_code == 400 and "cut short" in r.json()["error"]["message"]
    assert httpx.post(server.url + "/predict", json={"x": 2}).json()["y"] == 4.0  # the server is fine


def test_a_gzip_bomb_is_413_and_the_api_process_stays_small(shared_serve) -> None:
    server = shared_serve(SPEC)
    bomb = gzip.compress(b"\0" * (64 << 20), 9)  # 64 MiB inflated, ~64 KiB sent
    assert len(bomb) < 100_000
    httpx.post(server.url + "/predict", json={"x": 1})
    before = rss_peak_kb(server.proc.pid)
    statuses: list[int] = []

    def fire(chunked: bool) -> None:
        content = iter([bomb[i : i + 8192] for i in range(0, len(bomb), 8192)]) if chunked else bomb
        r = httpx.post(server.url + "/predict", content=content, headers={"Content-Encoding": "gzip"}, timeout=30)
        error = r.json()["error"]
        assert error["type"] == "payload_too_large" and "once decompressed" in error["message"], error
        statuses.append(r.status_code)

    threads = [threading.Thread(target=fire, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [413] * 8
    grown_mb = (rss_peak_kb(server.proc.pid) - before) / 1024
    assert grown_mb < 16, f"API process peak RSS grew {grown_mb:.0f} MB under 8 gzip bombs of 64 MiB"
    # just under the limit inflates and is served
    fits = gzip.compress(json.dumps({"x": 2, "echo": "a" * 1_000_000}).encode())
    r = post(server, fits, "gzip", **{"Accept-Encoding": "identity"})
    assert r.status_code == 200 and len(r.json()["echo"]) == 1_000_000


def test_large_answers_are_gzipped_for_clients_that_take_it(shared_serve) -> None:
    server = shared_serve(SPEC)
    big = {"x": 3, "echo": BIG_ECHO}

    def raw(accept: str, payload: dict) -> tuple[httpx.Headers, bytes]:
        with httpx.stream("POST", server.url + "/predict", json=payload, headers={"Accept-Encoding": accept}) as r:
            assert r.status_code == 200
            return r.headers, b"".join(r.iter_raw())

    headers, body = raw("gzip", big)
    assert headers["content-encoding"] == "gzip" and headers["vary"].lower() == "accept-encoding"
    assert int(headers["content-length"]) == len(body) < 100_000
    assert json.loads(gzip.decompress(body))["echo"] == BIG_ECHO
    headers, body = raw("deflate", big)  # tritonclient's response_compression_algorithm="deflate"
    assert headers["content-encoding"] == "deflate" and json.loads(zlib.decompress(body))["echo"] == BIG_ECHO
    for accept in ("identity", "br", "gzip;q=0"):
        headers, body = raw(accept, big)
        assert "content-encoding" not in headers and json.loads(body)["echo"] == BIG_ECHO, accept
    headers, body = raw("gzip, deflate", {"x": 3})  # small: as it is
    assert "content-encoding" not in headers and json.loads(body)["y"] == 9.0
    r = httpx.post(server.url + "/predict", json=big)  # httpx asks for gzip and decodes it
    assert r.headers["content-encoding"] == "gzip" and r.json()["echo"] == BIG_ECHO
    # head and body in one write (the express lane), compressed body and answer, pipelined
    one = gzip.compress(json.dumps(big).encode())
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nAccept-Encoding: gzip\r\n"
    head += f"Content-Length: {len(one)}\r\n\r\n"
    plain = json.dumps(big).encode()
    head2 = f"POST /predict HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nContent-Length: {len(plain)}\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head.encode() + one + head2.encode() + plain)
        for _ in range(2):
            status, got, answer = read_response(sock)
            assert status == 200 and got["content-encoding"] == "gzip"
            assert json.loads(gzip.decompress(answer))["echo"] == BIG_ECHO


def test_openai_routes_inflate_bodies_and_compress_large_answers_but_not_streams(shared_serve) -> None:
    server = shared_serve(echo_llm_spec())
    chat = {"model": "echo-llm", "messages": [{"role": "user", "content": "hi there"}]}
    url = server.url + "/v1/chat/completions"
    r = httpx.post(url, content=gzip.compress(json.dumps(chat).encode()), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "You said: hi there"
    r = httpx.post(url, content=json.dumps(chat), headers={"Content-Encoding": "zstd"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"
    assert "'zstd'" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"\x1f\x8b junk", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip data" in r.json()["error"]["message"]
    # a stream is sent as it comes, never compressed
    streamed = {**chat, "stream": True}
    with httpx.stream("POST", url, json=streamed, headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200 and "content-encoding" not in r.headers
        assert b"data: [DONE]" in b"".join(r.iter_raw())
    # a large answer (embeddings of many texts) is gzipped for a client that takes it
    texts = [f"text number {i}" for i in range(600)]
    embed = json.dumps({"model": "echo-llm", "input": texts}).encode()
    r = httpx.post(
        server.url + "/v1/embeddings",
        content=zlib.compress(embed),
        headers={"Content-Encoding": "deflate", "Content-Type": "application/json", "Accept-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip", r.text
    assert [d["index"] for d in r.json()["data"]] == list(range(600))


@pytest.fixture(scope="module")
def identity_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX Identity model: `x` FP32 [-1, 4] -> `y`."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("v2gz") / "identity.onnx"
    onnx.save(model, str(path))
    return path


def test_tritonclient_compressed_requests_and_answers_on_v2(shared_serve, identity_fp32: Path) -> None:
    pytest.importorskip("onnxruntime")
    triton = pytest.importorskip("tritonclient.http")
    spec = {
        "name": "ident",
        "model": {"backend": "onnx", "path": str(identity_fp32)},
        "api": {"kind": "v2"},
        "devices": {"accelerator": "cpu"},
        "limits": {"max_body_mb": 1},
        "server": {"access_log": False, "gzip_min_bytes": 0},  # every answer, for a client that asks
    }
    server = shared_serve(spec)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    data = np.arange(4 * 500, dtype=np.float32).reshape(500, 4) / 7
    for request in ("gzip", "deflate"):
        for response in (None, "gzip", "deflate"):
            for binary in (True, False):
                given = triton.InferInput("x", list(data.shape), "FP32")
                given.set_data_from_numpy(data, binary_data=binary)
                wanted = [triton.InferRequestedOutput("y", binary_data=binary)]
                result = client.infer(
                    "ident",
                    [given],
                    outputs=wanted,
                    request_compression_algorithm=request,
                    response_compression_algorithm=response,
                )
                np.testing.assert_array_equal(result.as_numpy("y"), data)
    # the same bodies without Content-Encoding were "malformed JSON" before: check one by hand
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    r = httpx.post(
        server.url + "/v2/models/ident/infer",
        content=gzip.compress(body.encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1, 2, 3, 4]
    r = httpx.post(server.url + "/v2/models/ident/infer", content=body.encode(), headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "'br'" in r.json()["error"]  # V2's error shape
    bomb = gzip.compress(b"\0" * (16 << 20))
    r = httpx.post(server.url + "/v2/models/ident/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "max_body_mb" in r.json()["error"]
