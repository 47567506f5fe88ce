"""Pipelined error paths, byte for byte beside stock uvicorn.

The same raw bytes go, in one write, to a real `servectl serve` and to stock uvicorn
(httptools, a bare ASGI app that squares x): a valid request followed by a bad one must
have its own answer first, as stock gives it, never the bad request's refusal in its place;
a refused request never reaches the app, and costs a line of log, not a hundred.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from support.servers import read_response
from support.specs import toolbox_spec
from support.stock import StockUvicorn

VALID = b'POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"x":3}'
H2C_CHUNKED = (
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b'connection: Upgrade\r\nupgrade: h2c\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{"x":4}\r\n0\r\n\r\n'
)
BAD_CHUNK = (
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
)
HUGE_HEAD = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (300 * 1024) + b"\r\n\r\n"
NOPE_BAD_CHUNK = b"POST /nope HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"


def answers(port: int, raw: bytes, wait_s: float = 3.0) -> list[tuple[int, bytes]]:
    """Send `raw` in one write; the answers read until the server closes, resets or goes
    quiet for `wait_s`: [(status, body)], in order."""
    got: list[tuple[int, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw)
        for _ in range(4):
            try:
                status, _, body = read_response(sock)
            except TimeoutError:
                break
            if status == 0:
                break
            got.append((status, body))
    return got


def first_is_nine(got: list[tuple[int, bytes]]) -> bool:
    return bool(got) and got[0][0] == 200 and json.loads(got[0][1])["y"] == 9.0


@pytest.mark.parametrize(
    ("bad", "stock_first"),
    [(H2C_CHUNKED, 200), (BAD_CHUNK, 400)],
    ids=["h2c-upgrade-chunked", "bad-chunk-size"],
)
def test_a_pipelined_bad_request_never_overtakes_the_answer_before_it(
    shared_serve, stock_uvicorn: StockUvicorn, bad: bytes, stock_first: int
) -> None:
    """Stock answers the first request behind an h2c Upgrade; behind a bad chunk size it
    writes its 400 first (the client takes it for the first answer): servectl answers both
    with the first request's own answer, then closes."""
    server = shared_serve(toolbox_spec())
    before = server.log()
    theirs = answers(stock_uvicorn.port, VALID + bad)
    ours = answers(server.port, VALID + bad)
    assert theirs and theirs[0][0] == stock_first, theirs
    assert first_is_nine(ours), ours  # the first request's own answer, not the 400
    assert len(ours) == 1, ours  # then the close: the bad request has no answer of its own
    new = server.log()[len(before) :]
    assert "write_eof" not in new and "internal error answering" not in new, new


def test_a_pipelined_oversized_head_waits_for_the_answer_before_it(shared_serve, stock_uvicorn: StockUvicorn) -> None:
    server = shared_serve(toolbox_spec())
    theirs = answers(stock_uvicorn.port, VALID + HUGE_HEAD)
    ours = answers(server.port, VALID + HUGE_HEAD)
    assert [status for status, _ in theirs] == [200, 200]  # stock has no head cap
    assert first_is_nine(ours), ours
    assert [status for status, _ in ours] == [200, 431], ours  # the answer, then the 431, then the close
    assert json.loads(ours[1][1])["error"]["type"] == "headers_too_large"


def test_a_refused_request_reaches_no_app_and_writes_one_line(shared_serve, stock_uvicorn: StockUvicorn) -> None:
    server = shared_serve(toolbox_spec())
    assert [status for status, _ in answers(stock_uvicorn.port, NOPE_BAD_CHUNK)] == [400]
    before = server.log()
    for _ in range(20):
        got = answers(server.port, NOPE_BAD_CHUNK)
        assert [status for status, _ in got] == [400], got
        assert json.loads(got[0][1])["error"]["type"] == "bad_request"
    head, rest = BAD_CHUNK.split(b"\r\n\r\n")
    for _ in range(5):  # the bad chunk in a later read: the model's task already reads the body
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + b"\r\n\r\n")
            time.sleep(0.05)
            sock.sendall(rest)
            status, _, body = read_response(sock)
            assert status == 400 and json.loads(body)["error"]["type"] == "bad_request", body
    head, rest = NOPE_BAD_CHUNK.split(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:  # answered before its body
        sock.sendall(head + b"\r\n\r\n")
        assert read_response(sock)[0] == 404
        sock.sendall(rest)  # junk in the rest of an answered body: the close, no second answer
        assert sock.recv(65536) == b""
    assert httpx.get(server.url + "/health").status_code == 200  # (and the log is flushed by now)
    new = server.log()[len(before) :]
    for noise in ("ASGI callable", "Unexpected ASGI message", "write_eof", "Traceback"):
        assert noise not in new, new
    assert new.count("\n") <= 25 * 2 + 5, new  # an access-log line each at most, not a traceback
