"""The server's edges, end to end: request-head size and time limits, connection caps,
Content-Type on JSON routes, and a port already in use.

Every test runs a real `servectl serve` on 127.0.0.1 and speaks to it over real sockets,
raw ones where a well-behaved client (httpx) cannot misbehave enough. Counts, sizes and
waits are bounded.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from servectl.bench.runner import free_port

from support.paths import ROOT
from support.servers import connect, read_response, write_spec
from support.specs import echo_llm_spec, toolbox_spec

HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def closed_by_server(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Wait up to `timeout` for the server to close; (closed, whatever it sent first)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def rss_peak_kb(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def send_huge_header(server, megabytes: int, result: list[int]) -> None:
    """Send a request whose one header is `megabytes` MB, until the server stops taking it;
    append the status it answered (0: none)."""
    sock = connect(server, timeout=20)
    try:
        sock.sendall(HEAD + b"X-Big: ")
        chunk = b"a" * (1 << 20)
        for _ in range(megabytes):
            sock.sendall(chunk)
        sock.sendall(b"\r\n\r\n")
    except OSError:  # the server refused and closed while we were still sending
        pass
    try:
        result.append(read_response(sock)[0])
    except OSError:
        result.append(0)
    finally:
        sock.close()


def test_oversized_headers_get_431_before_auth_and_memory_stays_flat(serve) -> None:
    server = serve(toolbox_spec(auth={"api_keys": ["k"]}))
    auth = {"Authorization": "Bearer k"}
    # just under the default 64 KiB cap: served
    r = httpx.post(server.url + "/predict", json={"x": 3}, headers={**auth, "X-Pad": "p" * 60_000})
    assert r.status_code == 200 and r.json()["y"] == 9.0

    # two pipelined requests of 40 KB heads each, sent at once: both served
    with connect(server) as sock:
        one = HEAD + b"X-Pad: " + b"p" * 40_000 + b"\r\n\r\n"
        sock.sendall(one + one)
        assert read_response(sock)[0] == read_response(sock)[0] == 200

    # far over it, and unauthenticated: 431 in servectl's JSON shape, at once, connection closed
    sock = connect(server)
    t0 = time.monotonic()
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    status, headers, body = read_response(sock)
    assert status == 431 and time.monotonic() - t0 < 5
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["type"] == "headers_too_large" and "max_header_kb" in error["message"]
    assert error["request_id"] == headers["x-request-id"]
    assert closed_by_server(sock, 5)[0]
    sock.close()
    # a long request line counts too
    with connect(server) as sock:
        sock.sendall(b"GET /health?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock)[0] == 431

    # several connections each sending a 20 MB header: the API process's peak RSS barely moves
    before = rss_peak_kb(server.proc.pid)
    results: list[int] = []
    threads = [threading.Thread(target=send_huge_header, args=(server, 20, results)) for _ in range(6)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grown_mb = (rss_peak_kb(server.proc.pid) - before) / 1024
    assert grown_mb < 40, f"API process peak RSS grew {grown_mb:.0f} MB under 6 x 20 MB headers"
    assert time.monotonic() - t0 < 30 and len(results) == 6
    assert results.count(431) >= 1, results  # the others may have been reset while still sending
    assert httpx.get(server.url + "/health").status_code == 200
    r = httpx.post(server.url + "/predict", json={"x": 2}, headers=auth)
    assert r.status_code == 200 and r.json()["y"] == 4.0


def test_slow_request_heads_are_closed_after_header_timeout(serve) -> None:
    server = serve(toolbox_spec(server={"header_timeout_s": 1.0}))
    dribblers = [connect(server) for _ in range(30)]
    silent = [connect(server) for _ in range(10)]
    for sock in dribblers:
        sock.sendall(HEAD)
    t0 = time.monotonic()
    open_ = set(range(len(dribblers)))
    answers: list[bytes] = []
    normal: list[int] = []
    while open_ and time.monotonic() - t0 < 8:
        for i in list(open_):  # a header line now and then, never the end of the head
            try:
                dribblers[i].sendall(b"X-Slow: 1\r\n")
            except OSError:
                open_.discard(i)
                continue
            dribblers[i].settimeout(0.01)
            try:
                got = dribblers[i].recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                got = b""
            answers.append(got)
            open_.discard(i)
        normal.append(httpx.get(server.url + "/health", timeout=5).status_code)
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    assert not open_, f"{len(open_)} slow connections still open after {elapsed:.1f}s"
    assert 0.8 < elapsed < 5
    assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) >= 25, answers[:3]
    assert b'"type":"request_timeout"' in next(a for a in answers if a)
    assert set(normal) == {200}, "normal requests kept working meanwhile"
    for sock in silent:  # connections that never sent a byte: closed without an answer
        closed, got = closed_by_server(sock, 3)
        assert closed and got == b""
    for sock in dribblers + silent:
        sock.close()
    assert httpx.post(server.url + "/predict", json={"x": 1}).json()["y"] == 1.0


def test_keep_alive_idle_timeout_and_head_deadline_per_request(serve) -> None:
    server = serve(toolbox_spec(server={"header_timeout_s": 1.0, "keep_alive_s": 1.5}))
    # an idle kept-alive connection is closed after keep_alive_s, silently
    sock = connect(server)
    sock.sendall(HEAD + b"\r\n")
    assert read_response(sock)[0] == 200
    t0 = time.monotonic()
    closed, got = closed_by_server(sock, 6)
    assert closed and got == b"" and 1.2 < time.monotonic() - t0 < 4
    sock.close()

    # a kept-alive connection used again: the head deadline runs from the new request's first byte
    sock = connect(server)
    sock.sendall(HEAD + b"\r\n")
    assert read_response(sock)[0] == 200
    time.sleep(1.2)  # longer than header_timeout_s, shorter than keep_alive_s: still open
    sock.sendall(HEAD + b"\r\n")
    assert read_response(sock)[0] == 200
    time.sleep(0.5)
    sock.sendall(b"GET /health HTTP/1.1\r\n")  # starts a request, never ends its head
    t0 = time.monotonic()
    status, _, body = read_response(sock)
    assert b"header_timeout_s" in body
    assert status == 408 and 0.7 < time.monotonic() - t0 < 4
    sock.close()

    # the rest of a body already answered (415 here) gets no more time than a head
    sock = connect(server)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n")
    sock.sendall(b"Content-Length: 10000000\r\n\r\nx")
    assert read_response(sock)[0] == 415
    t0 = time.monotonic()
    closed = False
    while not closed and time.monotonic() - t0 < 6:
        try:
            sock.sendall(b"x" * 100)
        except OSError:
            break
        closed = closed_by_server(sock, 0.3)[0]
    assert time.monotonic() - t0 < 4
    sock.close()

    # bytes that start no request (blank lines) keep no connection open for ever
    sock = connect(server)
    sock.sendall(HEAD + b"\r\n")
    assert read_response(sock)[0] == 200
    t0 = time.monotonic()
    closed = False
    while not closed and time.monotonic() - t0 < 6:
        try:
            sock.sendall(b"\r\n")
        except OSError:
            break
        closed = closed_by_server(sock, 0.3)[0]
    assert time.monotonic() - t0 < 4
    sock.close()

    # a request begun in the same read as the previous one's end gets its deadline too
    sock = connect(server)
    sock.sendall(HEAD + b"\r\n" + b"GET /hea")
    assert read_response(sock)[0] == 200
    t0 = time.monotonic()
    status, _, body = read_response(sock)
    assert status == 408 and b"header_timeout_s" in body and 0.7 < time.monotonic() - t0 < 4
    sock.close()


def test_a_client_gone_is_noticed_with_requests_pipelined_behind(serve) -> None:
    """The request being answered learns that its client left even when another one is
    pipelined behind it: its work is dropped (499), nothing is written to a closed socket."""
    server = serve(toolbox_spec())

    def post(body: bytes) -> bytes:
        head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    for _ in range(3):
        sock = connect(server)
        sock.sendall(post(b'{"x": 1, "sleep": 0.5}') + post(b'{"x": 2}'))
        time.sleep(0.15)
        sock.close()
    deadline = time.monotonic() + 10
    while server.metric("servectl_requests_total", route="/predict", status="499") < 3:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    time.sleep(0.7)  # past the sleeps: anything left would have been answered by now
    assert "Exception in ASGI application" not in server.log()
    assert httpx.post(server.url + "/predict", json={"x": 3}).json()["y"] == 9.0


def test_connections_beyond_max_connections_get_503_json_at_once(serve) -> None:
    server = serve(toolbox_spec(server={"max_connections": 5, "keep_alive_s": 30, "header_timeout_s": 30}))
    time.sleep(0.3)  # the readiness probes' connections are gone
    held = []
    for _ in range(5):  # five kept-alive connections fill the server
        sock = connect(server)
        sock.sendall(HEAD + b"\r\n")
        assert read_response(sock)[0] == 200
        held.append(sock)
    for _ in range(3):
        t0 = time.monotonic()
        r = httpx.get(server.url + "/health", timeout=5)
        assert r.status_code == 503 and time.monotonic() - t0 < 2
        assert r.headers["retry-after"] == "1" and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["type"] == "overloaded" and "max_connections" in r.json()["error"]["message"]
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    r = httpx.post(server.url + "/predict", json={"x": 2}, timeout=5)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    # the held connections are still served
    held[0].sendall(HEAD + b"\r\n")
    assert read_response(held[0])[0] == 200
    # connections closing make room again
    for sock in held[:2]:
        sock.close()
    deadline = time.monotonic() + 5
    while (status := httpx.get(server.url + "/health", timeout=5).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200
    assert httpx.post(server.url + "/predict", json={"x": 3}, timeout=5).json()["y"] == 9.0
    for sock in held[2:]:
        sock.close()


def test_slowloris_under_a_128_fd_limit_gets_503s_not_hangs(tmp_path: Path) -> None:
    """The reported failure: 150 idle connections in a process limited to 128 files made
    normal requests fail. Now the limit is checked at start-up, extra connections get a 503
    at once, and the idle ones are closed after header_timeout_s."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    spec = write_spec(tmp_path, toolbox_spec(server={"header_timeout_s": 1.0}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servectl", "serve", str(spec), f"server.port={port}", "server.max_connections=60"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=limit_files,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(150)]
        t0 = time.monotonic()
        time.sleep(0.7)  # the 90 over the cap are answered 503 and closed within 0.5s
        r = httpx.get(url + "/health", timeout=5)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and time.monotonic() - t0 < 2
        statuses = []
        while time.monotonic() - t0 < 6 and (not statuses or statuses[-1] != 200):
            statuses.append(httpx.get(url + "/health", timeout=5).status_code)
            time.sleep(0.2)
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
        assert httpx.post(url + "/predict", json={"x": 5}, timeout=5).json()["y"] == 25.0
        for sock in idle:
            sock.close()
    finally:
        proc.terminate()
        proc.wait(30)
    output = (tmp_path / "server.log").read_text()
    assert "Traceback" not in output and "Too many open files" not in output

    # the default max_connections (1000) does not fit 128 files: said at start-up
    with open(tmp_path / "server2.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servectl", "serve", str(spec), f"server.port={free_port()}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=limit_files,
        )
    try:
        deadline = time.monotonic() + 30
        while "max_connections" not in (output := (tmp_path / "server2.log").read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, output
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    assert "server.max_connections=1000 does not fit the open-file limit (128" in output


def post_json(body: bytes, extra: bytes = b"") -> bytes:
    head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
    return head % (len(body), extra) + body


def test_an_upgrade_servectl_does_not_speak_is_served_as_http_1_1(shared_serve) -> None:
    """`curl --http2 http://...` asks for h2c: the request is answered as HTTP/1.1 with its
    body (the parser took the body for the new protocol's bytes, and the model got none)."""
    server = shared_serve(toolbox_spec())
    h2c = b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    with connect(server) as sock:
        sock.sendall(post_json(b'{"x": 3}', h2c) + post_json(b'{"x": 4}'))  # and a request behind it
        for y in (9.0, 16.0):
            status, _, body = read_response(sock)
            assert status == 200 and json.loads(body)["y"] == y, body
        raw = post_json(b'{"x": 5}', h2c)
        cut = raw.index(b"\r\n\r\n") + 6  # the head and part of the body, then the rest
        sock.sendall(raw[:cut])
        time.sleep(0.05)
        sock.sendall(raw[cut:])
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body)["y"] == 25.0, body


def test_bytes_that_do_not_parse_behind_a_request_wait_for_its_answer(shared_serve) -> None:
    """Junk after a valid request: the request's own answer first, then the connection closes
    (uvicorn wrote its 400 at once, which the client took for its request's answer)."""
    server = shared_serve(toolbox_spec())
    with connect(server) as sock:
        sock.sendall(post_json(b'{"x": 2, "sleep": 0.2}') + b"NOT HTTP AT ALL\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body)["y"] == 4.0, body
        assert closed_by_server(sock, 5) == (True, b"")
    with connect(server) as sock:  # junk inside a body: the 400 at once, not a 504 at the deadline
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZZ\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 400 and json.loads(body)["error"]["type"] == "bad_request"
    with connect(server) as sock:  # junk alone: a 400 in servectl's error shape
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 400 and json.loads(body)["error"]["type"] == "bad_request"
        assert headers["connection"] == "close"


def test_json_routes_refuse_other_content_types(shared_serve) -> None:
    server = shared_serve(toolbox_spec())
    url = server.url + "/predict"
    refused = server.metric("servectl_requests_total", route="/predict", status="415")
    body = json.dumps({"x": 3})
    r = httpx.post(url, content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert r.json()["error"]["type"] == "unsupported_media_type" and "text/plain" in r.json()["error"]["message"]
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    form = httpx.post(url, data={"x": "3"})  # a form, as a web page would post it (and `curl -d`)
    assert form.status_code == 415 and "curl --json" in form.json()["error"]["message"]
    assert httpx.post(url, content=body, headers={"Content-Type": "application/octet-stream"}).status_code == 415
    shouted = httpx.post(url, content=b"x=3", headers={"Content-Type": "Application/X-WWW-Form-Urlencoded"})
    assert shouted.status_code == 415 and "curl --json" in shouted.json()["error"]["message"]
    assert httpx.post(url, content=body, headers={"Content-Type": "multipart/form-data; boundary=x"}).status_code == 415
    for ok in (None, "application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
        headers = {"Content-Type": ok} if ok else {}
        r = httpx.post(url, content=body, headers=headers)
        assert r.status_code == 200 and r.json()["y"] == 9.0, (ok, r.text)
    assert server.metric("servectl_requests_total", route="/predict", status="415") - refused == 5
    # other routes are not JSON routes: untouched
    assert httpx.get(server.url + "/health", headers={"Content-Type": "text/plain"}).status_code == 200


def test_openai_routes_answer_415_in_openai_shape(shared_serve) -> None:
    server = shared_serve(echo_llm_spec())
    url = server.url + "/v1/chat/completions"
    request = {"model": "echo-llm", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(url, content=json.dumps(request), headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 415
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_media_type"
    assert "text/plain" in error["message"]
    assert httpx.post(url, json=request).status_code == 200


def test_model_routes_answer_other_methods_405_in_their_protocols_shape(shared_serve) -> None:
    """Model routes are served by the edge, not FastAPI: another method is a 405 with `Allow`,
    in the route protocol's error shape, and the route is still documented in OpenAPI."""
    server = shared_serve(toolbox_spec())
    r = httpx.get(server.url + "/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert (
        r.json()["error"]["type"] == "method_not_allowed"
        and r.json()["error"]["request_id"] == r.headers["x-request-id"]
    )
    assert "post" in httpx.get(server.url + "/openapi.json").json()["paths"]["/predict"]
    llm = shared_serve(echo_llm_spec())
    r = httpx.put(llm.url + "/v1/chat/completions", json={})
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed" and r.json()["error"]["type"] == "invalid_request_error"


def test_port_in_use_exits_1_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = write_spec(tmp_path, toolbox_spec())
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "servectl", "serve", str(spec), f"server.port={port}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert "worker 0 started" not in output
    lines = [line for line in output.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(lines) == 1 and "address already in use" in lines[0].lower(), output
    assert elapsed < 20  # no worker was started


def test_ipv6_host_is_served(serve) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = serve(toolbox_spec(), ready=False, overrides=["server.host=::1"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log()
        try:
            r = httpx.get(f"http://[::1]:{server.port}/ready", timeout=1)
            if r.status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    assert httpx.post(f"http://[::1]:{server.port}/predict", json={"x": 4}).json()["y"] == 16.0
    with pytest.raises(httpx.TransportError):  # IPv6 only, as asked
        httpx.get(server.url + "/health", timeout=1)
