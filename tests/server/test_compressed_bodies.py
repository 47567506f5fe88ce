"""Compressed request bodies and answers, in-process: the inflater (gzip, deflate, a bomb
stopped at the limit, data that does not inflate), `Content-Encoding` and `Accept-Encoding`
read as clients send them, `read_body` inflating as pieces come, and a route several models
share (OpenAI's) reading a gzip body to pick its model."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from servectl.processes.deployment import Deployment
from servectl.server.app import build_app
from servectl.server.asgi import read_body
from servectl.server.edge import build_edge
from servectl.server.encoding import BodyTooLarge, Inflater, UnreadableBody, answer_coding, compress, inflater_for
from servectl.spec import load_deployment

ROOT = Path(__file__).resolve().parents[2]
BODY = orjson.dumps({"x": 3.0, "items": list(range(2000))})


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def inflated(coding: bytes, data: bytes, limit: int = 1 << 20, piece: int | None = None) -> bytes:
    inflater = inflater_for(coding, limit)
    assert inflater is not None
    pieces = [data] if piece is None else [data[i : i + piece] for i in range(0, len(data), piece)]
    out = b"".join(inflater.feed(p) for p in pieces)
    inflater.end()
    return out


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        (b"gzip", gzip.compress(BODY)),
        (b"x-gzip", gzip.compress(BODY)),
        (b"GZip", gzip.compress(BODY)),
        (b"deflate", zlib.compress(BODY)),  # what RFC 9110 (and tritonclient) call deflate: zlib's format
        (b"deflate", raw_deflate(BODY)),  # bare deflate data, as some clients send it
        (b"identity, gzip", gzip.compress(BODY)),
        (b"gzip", gzip.compress(BODY[:5000]) + gzip.compress(BODY[5000:])),  # two gzip members
    ],
)
def test_gzip_and_deflate_inflate_whole_or_a_byte_at_a_time(coding: bytes, packed: bytes) -> None:
    assert inflated(coding, packed) == BODY
    assert inflated(coding, packed, piece=1) == BODY
    assert inflated(coding, packed, piece=777) == BODY


def test_identity_needs_nothing_and_an_empty_body_stays_empty() -> None:
    assert inflater_for(b"identity", 10) is None
    assert inflater_for(b" Identity ", 10) is None
    assert inflated(b"gzip", b"") == b"" and inflated(b"deflate", b"") == b""


@pytest.mark.parametrize("coding", [b"br", b"zstd", b"compress", b"gzip, br", b"gzip, gzip", b"bogus\xff"])
def test_other_codings_are_415_naming_them(coding: bytes) -> None:
    with pytest.raises(UnreadableBody) as refused:
        inflater_for(coding, 10)
    failure = refused.value.failure
    assert failure.status == 415 and failure.kind == "unsupported_media_type"
    assert repr(coding.decode("latin-1")) in failure.message and "gzip, deflate or identity" in failure.message


@pytest.mark.parametrize(
    ("coding", "packed", "why"),
    [
        (b"gzip", b"this is not gzip at all", "incorrect header check"),
        (b"gzip", gzip.compress(BODY)[:-9], "cut short"),  # truncated
        (b"gzip", gzip.compress(BODY)[:10] + b"\x00" * 50 + gzip.compress(BODY)[60:], "Error"),  # corrupt inside
        (b"deflate", b"\x78\x9c" + b"\xff" * 40, "Error"),
        (b"deflate", zlib.compress(BODY) + b"junk", "after the end"),
        (b"deflate", b"x", "cut short"),
    ],
)
def test_data_that_does_not_inflate_is_a_400_naming_the_coding(coding: bytes, packed: bytes, why: str) -> None:
    with pytest.raises(UnreadableBody) as refused:
        inflated(coding, packed)
    failure = refused.value.failure
    name = coding.decode()
    assert failure.status == 400 and f"not valid {name} data (Content-Encoding: {name})" in failure.message
    assert why in failure.message


def test_a_bomb_stops_one_byte_past_the_limit_in_little_memory() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    limit = 1 << 20
    tracemalloc.start()
    try:
        inflater = Inflater("gzip", limit)
        with pytest.raises(BodyTooLarge):
            for i in range(0, len(bomb), 4096):
                inflater.feed(bomb[i : i + 4096])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert inflater.size == limit + 1  # inflated one byte past the limit, no more
    assert peak < 4 * limit, peak
    # just at the limit is fine
    assert len(inflated(b"gzip", gzip.compress(b"\0" * limit), limit)) == limit
    with pytest.raises(BodyTooLarge):
        inflated(b"deflate", zlib.compress(b"\0" * (limit + 1)), limit)


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        (b"", None),
        (b"gzip", b"gzip"),
        (b"gzip, deflate, br, zstd", b"gzip"),  # httpx's
        (b"GZIP;q=0.5", b"gzip"),
        (b"x-gzip", b"gzip"),
        (b"deflate", b"deflate"),  # tritonclient's response_compression_algorithm="deflate"
        (b"gzip;q=0, deflate", b"deflate"),
        (b"gzip;q=0", None),
        (b"identity", None),
        (b"br", None),
        (b"*", b"gzip"),
        (b"*;q=0", None),
        (b"*, gzip;q=0", b"deflate"),
        (b"gzip;q=bogus", None),
        (b"gzip ; q=1.0", b"gzip"),
    ],
)
def test_accept_encoding_picks_gzip_else_deflate(header: bytes | None, coding: bytes | None) -> None:
    assert answer_coding(header) == coding


def test_compressed_answers_read_back_as_clients_read_them() -> None:
    assert gzip.decompress(compress(BODY, b"gzip")) == BODY
    assert zlib.decompress(compress(BODY, b"deflate")) == BODY  # tritonclient's zlib.decompress
    assert len(compress(BODY, b"gzip")) < len(BODY) // 2


def test_read_body_inflates_the_pieces_as_they_come_under_the_limit() -> None:
    packed = gzip.compress(BODY)

    def receiver(data: bytes, piece: int) -> Any:
        messages = [data[i : i + piece] for i in range(0, len(data), piece)]

        async def receive() -> dict[str, Any]:
            body = messages.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(messages)}

        return receive

    async def read(data: bytes, limit: int, piece: int = 100) -> bytes | None:
        return await read_body(receiver(data, piece), limit, inflater_for(b"gzip", limit))

    assert asyncio.run(read(packed, len(BODY))) == BODY
    with pytest.raises(BodyTooLarge):  # the inflated size counts
        asyncio.run(read(packed, len(BODY) - 1))
    with pytest.raises(UnreadableBody):
        asyncio.run(read(packed[:-20], len(BODY)))
    assert asyncio.run(read_body(receiver(BODY, 100), len(BODY))) == BODY  # no inflater: as before


def shared_route(tmp_path: Path) -> Any:
    """Two OpenAI models on one route (`ByModel`), limits 1 KiB."""
    entry = {
        "model": {"backend": "python"},
        "handler": str(ROOT / "handlers" / "echo_llm.py"),
        "api": {"kind": "openai"},
        "limits": {"timeout_s": 2, "max_body_mb": 1 / 1024},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"models": [{**entry, "name": "a"}, {**entry, "name": "b"}]}))
    deployment = Deployment(load_deployment([path]), plan=lambda _spec: ([], "cpu"))
    return build_edge(deployment, build_app(deployment))


def post(app: Any, body: bytes, encoding: bytes) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [body[i : i + 50] for i in range(0, len(body), 50)]

    async def receive() -> dict[str, Any]:
        if messages:
            piece = messages.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(messages)}
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-encoding", encoding), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers, "extensions": {}}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def test_a_shared_openai_route_reads_the_model_from_a_gzip_body_and_refuses_in_openais_shape(tmp_path: Path) -> None:
    app = shared_route(tmp_path)
    status, body = post(app, gzip.compress(b'{"model": "c", "messages": []}'), b"gzip")
    assert status == 404 and "serves: a, b" in body["error"]["message"]  # inflated, read, routed
    status, body = post(app, zlib.compress(b'{"model": "c", "messages": []}'), b"deflate")
    assert status == 404 and "serves: a, b" in body["error"]["message"]
    status, body = post(app, gzip.compress(b'{"model": "a", "messages": [' + b" " * 5000 + b"]}"), b"gzip")
    assert (
        status == 413 and body["error"]["type"] == "invalid_request_error" and "1024 bytes" in body["error"]["message"]
    )
    status, body = post(app, b'{"model": "a"}', b"br")
    assert status == 415 and "'br'" in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    status, body = post(app, b'{"model": "a"}', b"gzip")
    assert status == 400 and "not valid gzip data" in body["error"]["message"]
