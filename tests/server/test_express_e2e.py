"""Both ways a model request is answered, end to end: sent in one write (its body comes with
its head: the express lane, no task) and sent in two (the head read alone: the task path).
A real `servectl serve`, raw sockets; each answer must be the same either way."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from support.servers import connect, read_response
from support.specs import streamer_spec, toolbox_spec

CASES: list[tuple[str, bytes, bytes, int]] = [
    # (what, content-type, body, status)
    ("a reply", b"application/json", b'{"x": 3.0}', 200),
    ("a handler error", b"application/json", b'{"x": 1.0, "fail": true}', 500),
    ("invalid input", b"application/json", b'{"x": "abc"}', 422),
    ("not JSON", b"application/json", b"{not json", 400),
    ("past the deadline", b"application/json", b'{"sleep": 1.5}', 504),
    ("a refused check", b"text/plain", b'{"x": 3.0}', 415),
    ("too large", b"application/json", b'{"x": 3.0, "echo": "' + b"a" * 12_000 + b'"}', 413),
]


def request(path: str, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    head = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
    return head % (path.encode(), content_type, len(body), extra) + body


def exchange(server: Any, raw: bytes, split: bool) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` in one write, or its head and then (once the head was read alone) its body."""
    with connect(server) as sock:
        if split:
            head, _, body = raw.partition(b"\r\n\r\n")
            sock.sendall(head + b"\r\n\r\n")
            time.sleep(0.05)
            sock.sendall(body)
        else:
            sock.sendall(raw)
        return read_response(sock)


def comparable(status: int, headers: dict[str, str], body: bytes) -> tuple[int, list[str], Any]:
    """An answer without what differs by request: its id, and a reply's batch details."""
    data = json.loads(body)
    if status == 200:
        data = data["y"]
    else:
        data["error"].pop("request_id")
    return status, sorted(set(headers) - {"date"}), data


@pytest.fixture(scope="module")
def toolbox(shared_serve: Any) -> Any:
    return shared_serve(toolbox_spec(limits={"timeout_s": 1, "max_body_mb": 0.01}))


@pytest.mark.parametrize(("what", "content_type", "body", "status"), CASES, ids=[c[0] for c in CASES])
def test_an_answer_is_the_same_whichever_way_the_request_came(
    toolbox: Any, what: str, content_type: bytes, body: bytes, status: int
) -> None:
    raw = request("/predict", content_type, body)
    whole = exchange(toolbox, raw, split=False)
    split = exchange(toolbox, raw, split=True)
    assert whole[0] == status, whole
    assert comparable(*whole) == comparable(*split)
    assert "x-request-id" in whole[1] and whole[1]["content-type"] == "application/json"
    if status == 200:
        assert json.loads(whole[2])["y"] == 9.0


def test_many_clients_at_once_each_get_their_own_answer(toolbox: Any) -> None:
    socks = [connect(toolbox) for _ in range(32)]
    try:
        for rounds in range(3):
            for i, sock in enumerate(socks):
                sock.sendall(request("/predict", b"application/json", b'{"x": %d}' % (i + rounds)))
            for i, sock in enumerate(socks):
                status, _, body = read_response(sock)
                assert status == 200 and json.loads(body)["y"] == float((i + rounds) ** 2)
    finally:
        for sock in socks:
            sock.close()


def test_a_client_leaving_its_queued_request_is_counted_gone_and_the_server_serves_on(toolbox: Any) -> None:
    gone = toolbox.metric("servectl_requests_total", route="/predict", status="499")
    sock = connect(toolbox)
    sock.sendall(request("/predict", b"application/json", b'{"sleep": 0.5}'))
    time.sleep(0.2)  # taken, and its worker busy with it
    sock.close()
    deadline = time.monotonic() + 10
    while toolbox.metric("servectl_requests_total", route="/predict", status="499") == gone:
        assert time.monotonic() < deadline, "the request never counted as gone"
        time.sleep(0.05)
    status, _, body = exchange(toolbox, request("/predict", b"application/json", b'{"x": 2.0}'), split=False)
    assert status == 200 and json.loads(body)["y"] == 4.0


def test_a_stream_is_the_same_whichever_way_its_request_came(serve: Any) -> None:
    server = serve(streamer_spec())
    raw = request("/predict", b"application/json", b'{"n": 3}', b"connection: close\r\n")
    streams = []
    for split in (False, True):
        with connect(server) as sock:
            head, _, body = raw.partition(b"\r\n\r\n")
            if split:
                sock.sendall(head + b"\r\n\r\n")
                time.sleep(0.05)
                sock.sendall(body)
            else:
                sock.sendall(raw)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        answer_head, _, chunked = got.partition(b"\r\n\r\n")
        assert answer_head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in answer_head.lower()
        streams.append(chunked)
    assert streams[0] == streams[1] and streams[0].count(b"\n") > 3
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass  # still accepting
