"""servectl frames requests no more leniently than stock uvicorn.

The same raw byte sequences (smuggling attempts, malformed framing, pipelined and split
requests) go to a real `servectl serve` and to stock uvicorn (httptools) serving a bare
app that answers the same route the same way; for every sequence, servectl serves no
more requests than stock does, and exactly as many where the bytes are well formed.
"""

from __future__ import annotations

import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from support.servers import read_response
from support.specs import toolbox_spec
from support.stock import StockUvicorn


def post(head: bytes, body: bytes) -> bytes:
    return b"POST /predict HTTP/1.1\r\nhost: x\r\n" + head + b"\r\n" + body


VALID = post(b"content-length: 7\r\n", b'{"x":3}')
CHUNKED = b'7\r\n{"x":3}\r\n0\r\n\r\n'

WELL_FORMED = {
    "plain": VALID,
    "chunked": post(b"transfer-encoding: chunked\r\n", CHUNKED),
    "pipelined": VALID + VALID + VALID,
    "chunked then plain": post(b"transfer-encoding: chunked\r\n", CHUNKED) + VALID,
    "chunk extension": post(b"transfer-encoding: chunked\r\n", b'7;name=v\r\n{"x":3}\r\n0\r\n\r\n'),
}
ATTEMPTS = {
    "CL+TE": post(b"content-length: 7\r\ntransfer-encoding: chunked\r\n", CHUNKED) + VALID,
    "TE+CL": post(b"transfer-encoding: chunked\r\ncontent-length: 40\r\n", CHUNKED) + VALID,
    "duplicate CL, same": post(b"content-length: 7\r\ncontent-length: 7\r\n", b'{"x":3}'),
    "duplicate CL, differing": post(b"content-length: 7\r\ncontent-length: 40\r\n", b'{"x":3}') + VALID,
    "CL list": post(b"content-length: 7, 7\r\n", b'{"x":3}'),
    "CL with sign": post(b"content-length: +7\r\n", b'{"x":3}'),
    "TE chunked, identity": post(b"transfer-encoding: chunked, identity\r\n", CHUNKED) + VALID,
    "TE xchunked": post(b"transfer-encoding: xchunked\r\n", CHUNKED) + VALID,
    "TE space before colon": post(b"transfer-encoding : chunked\r\n", CHUNKED) + VALID,
    "TE tab": post(b"transfer-encoding:\tchunked\r\n", CHUNKED) + VALID,
    "TE twice": post(b"transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n", CHUNKED) + VALID,
    "TE vertical tab": post(b"transfer-encoding:\x0bchunked\r\n", CHUNKED) + VALID,
    "chunk size zz": post(b"transfer-encoding: chunked\r\n", b'zz\r\n{"x":3}\r\n0\r\n\r\n'),
    "chunk size -1": post(b"transfer-encoding: chunked\r\n", b'-1\r\n{"x":3}\r\n0\r\n\r\n'),
    "chunk size 0x7": post(b"transfer-encoding: chunked\r\n", b'0x7\r\n{"x":3}\r\n0\r\n\r\n'),
    "chunk size overflow": post(b"transfer-encoding: chunked\r\n", b"fffffffffffffffffffff\r\nxx\r\n0\r\n\r\n"),
    "chunk without CRLF": post(b"transfer-encoding: chunked\r\n", b'7\r\n{"x":3}0\r\n\r\n') + VALID,
    "bare LF": VALID.replace(b"\r\n", b"\n"),
    "bare CR": VALID.replace(b"\r\n", b"\r"),
    "obs-fold": post(b"x-a: 1\r\n 2\r\ncontent-length: 7\r\n", b'{"x":3}'),
    "obs-fold on CL": post(b"x-a: 1\r\ncontent-length:\r\n 7\r\n", b'{"x":3}'),
    "space in header name": post(b"content length: 7\r\n", b'{"x":3}'),
    "NUL in header": post(b"x-a: 1\x002\r\ncontent-length: 7\r\n", b'{"x":3}'),
    "HTTP/1.0 chunked": VALID.replace(b"HTTP/1.1", b"HTTP/1.0").replace(
        b"content-length: 7", b"transfer-encoding: chunked"
    )
    + CHUNKED,
    "CL 0 smuggling a request": post(b"content-length: 0\r\n", b"") + VALID,
    "junk before request": b"\r\n\r\nXX" + VALID,
    "absolute URI": VALID.replace(b"/predict", b"http://evil/predict", 1),
    "request line spaces": VALID.replace(b"POST /predict", b"POST  /predict", 1),
}


def served(port: int, raw: bytes, split: list[int] | None = None, expect: int = 8) -> int:
    """Send `raw` (whole, or cut at `split`); how many answers the app gave (status 200)
    before the server closed or went quiet (or `expect` answers came: no more can)."""
    count = 0
    with socket.create_connection(("127.0.0.1", port), timeout=1.5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        last = 0
        for cut in [*(split or []), len(raw)]:
            sock.sendall(raw[last:cut])
            last = cut
            time.sleep(0.01)
        for _ in range(expect):
            try:
                status, _, body = read_response(sock)
            except (TimeoutError, OSError):
                break
            if status == 0:
                break
            if status == 200:
                assert json.loads(body)["y"] == 9.0, body
                count += 1
    return count


def both(server_port: int, stock_port: int, cases: dict[str, bytes]) -> dict[str, tuple[int, int]]:
    """{case: (servectl's count, stock's count)}, every case on its own connections, at once."""
    with ThreadPoolExecutor(16) as pool:
        ours = {name: pool.submit(served, server_port, raw) for name, raw in cases.items()}
        theirs = {name: pool.submit(served, stock_port, raw) for name, raw in cases.items()}
        return {name: (ours[name].result(), theirs[name].result()) for name in cases}


def test_well_formed_requests_are_served_alike(shared_serve, stock_uvicorn: StockUvicorn) -> None:
    server = shared_serve(toolbox_spec())
    counts = both(server.port, stock_uvicorn.port, WELL_FORMED)
    assert all(ours == theirs > 0 for ours, theirs in counts.values()), counts


def test_no_framing_is_taken_more_leniently_than_by_stock_uvicorn(shared_serve, stock_uvicorn: StockUvicorn) -> None:
    server = shared_serve(toolbox_spec())
    counts = both(server.port, stock_uvicorn.port, ATTEMPTS)
    lenient = {name: c for name, c in counts.items() if c[0] > c[1]}
    assert not lenient, f"servectl served more than stock uvicorn: {lenient} (all: {counts})"


def test_requests_split_anywhere_are_served_alike(shared_serve, stock_uvicorn: StockUvicorn) -> None:
    server = shared_serve(toolbox_spec())
    rng = random.Random(7)
    raw = VALID + post(b"transfer-encoding: chunked\r\n", CHUNKED) + VALID
    splits = [sorted(rng.sample(range(1, len(raw)), 3)) for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:  # three requests in each: the third answer ends the wait
        ours = list(pool.map(lambda cuts: served(server.port, raw, cuts, expect=3), splits))
        theirs = list(pool.map(lambda cuts: served(stock_uvicorn.port, raw, cuts, expect=3), splits))
    assert ours == theirs == [3] * len(splits), (splits, ours, theirs)
