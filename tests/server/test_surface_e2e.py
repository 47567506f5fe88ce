"""The HTTP surface, end to end: auth on every route, CORS, request ids, logs, metrics, fuzzing."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.specs import toolbox_spec

OPEN = {"/health", "/ready"}
DOCS = {"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
OPS = {"/metrics", "/info", "/stats"}


def routes(server, key: str) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, read from its own OpenAPI document, plus docs."""
    schema = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": key}).json()
    found = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    return found | {("GET", p) for p in DOCS} | {("GET", "/no/such/route")}


def call(server, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = b'{"x": 1}' if method == "POST" else None
    return httpx.request(method, server.url + path, content=body, headers=headers)


def test_every_route_walked_for_auth_defaults(serve) -> None:
    server = serve(toolbox_spec(auth={"api_keys": ["s3cret-key"]}))
    for method, path in sorted(routes(server, "s3cret-key")):
        anonymous = call(server, method, path)
        if path in OPEN:  # docs and ops routes too need a key while keys exist (protect_* default: null)
            assert anonymous.status_code != 401, (method, path)
        else:
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            assert anonymous.json()["error"]["type"] == "unauthorized"
        for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
            assert call(server, method, path, headers).status_code != 401, (method, path, headers)
    assert "s3cret-key" not in httpx.get(server.url + "/info", headers={"X-API-Key": "s3cret-key"}).text
    assert "s3cret-key" not in server.log()


def test_protect_docs_and_metrics(serve) -> None:
    server = serve(toolbox_spec(auth={"api_keys": "k", "protect_docs": True, "protect_metrics": True}))
    for method, path in sorted(routes(server, "k")):
        expected_open = path in OPEN
        status = call(server, method, path).status_code
        assert (status != 401) == expected_open, (method, path, status)


def test_protect_false_opens_docs_and_metrics_but_never_stats(serve) -> None:
    """`false` set explicitly: the docs, /metrics (a scraper without a key) and /info open to
    anyone, as they were by default before; /stats (usage by key) still needs a key."""
    server = serve(toolbox_spec(auth={"api_keys": "k", "protect_docs": False, "protect_metrics": False}))
    for method, path in sorted(routes(server, "k")):
        expected_open = path in OPEN | DOCS | OPS - {"/stats"}
        status = call(server, method, path).status_code
        assert (status != 401) == expected_open, (method, path, status)


def test_cors_off_by_default_and_on_when_listed(serve, shared_serve) -> None:
    off = shared_serve(toolbox_spec())
    r = httpx.post(off.url + "/predict", json={"x": 1}, headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers
    on = serve(toolbox_spec(server={"cors_origins": ["https://app.example"]}))
    pre = httpx.options(
        on.url + "/predict",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
    r = httpx.post(on.url + "/predict", json={"x": 1}, headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_request_ids_sanitised_capped_returned_and_logged(serve) -> None:
    server = serve(toolbox_spec(server={"log_format": "json"}))
    r = httpx.post(server.url + "/predict", json={"x": 1}, headers={"X-Request-Id": "abc<script>\"'def"})
    assert r.headers["x-request-id"] == "abcscriptdef"
    long = httpx.get(server.url + "/health", headers={"X-Request-Id": "z" * 500})
    assert long.headers["x-request-id"] == "z" * 64
    fresh = httpx.get(server.url + "/ready")
    assert len(fresh.headers["x-request-id"]) == 16
    with httpx.Client(base_url=server.url, timeout=5) as client:  # a HEAD answer's head is not held back
        head = client.head("/health")  # GET's answer without its body
        got = client.get("/health")  # the same connection goes on
        assert head.status_code == got.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(got.content) > 0
        assert client.head("/metrics").status_code == 200
        refused = client.head("/predict")  # a model route takes POST only: 405, its length, no body
        assert refused.status_code == 405 and int(refused.headers["content-length"]) > 0 and refused.content == b""
        assert client.post("/predict", json={"x": 2}).json()["y"] == 4.0
    failing = httpx.post(server.url + "/predict", json={"fail": True}, headers={"X-Request-Id": "trace-me"})
    assert failing.status_code == 500
    deadline = time.monotonic() + 5  # access lines are written in batches, within 100 ms
    while "POST /predict 500" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [e for e in lines if e["logger"] == "servectl.access"]
    assert {"method": "POST", "path": "/predict", "status": 200, "request_id": "abcscriptdef"}.items() <= next(
        e for e in access if e["request_id"] == "abcscriptdef"
    ).items()
    assert any(e["request_id"] == "trace-me" and e["status"] == 500 for e in access)
    worker_lines = [e for e in lines if e["logger"] == "servectl.worker"]
    assert any(e.get("request_id") == "trace-me" and "boom" in e["message"] for e in worker_lines)


def test_metrics_are_counted_across_workers(serve) -> None:
    server = serve(toolbox_spec(devices={"workers_per_device": 2}, limits={"timeout_s": 900}))

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json={"x": i, "sleep": 0.01}) for i in range(40)))

    responses = asyncio.run(fire())
    assert len({r.json()["pid"] for r in responses}) == 2
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "servectl_requests_total",
        "servectl_request_duration_seconds_bucket",
        "servectl_queue_seconds_bucket",
        "servectl_predict_seconds_bucket",
        "servectl_batch_size_bucket",
        "servectl_queue_depth",
        "servectl_worker_inflight",
        "servectl_worker_restarts_total",
        "servectl_workers_ready",
        "servectl_requests_dropped_total",
    ):
        assert name in text, name
    assert server.metric("servectl_requests_total", route="/predict", status="200") == 40
    assert server.metric("servectl_request_duration_seconds_count", route="/predict") == 40
    assert server.metric("servectl_queue_seconds_count") == 40
    assert server.metric("servectl_batch_size_sum") == 40
    assert server.metric("servectl_workers_ready") == 2
    # the processes: the API's own process_*, each worker's CPU time and resident memory
    assert server.metric("process_cpu_seconds_total") > 0 and server.metric("process_resident_memory_bytes") > 1e6
    for worker in ("0", "1"):
        assert server.metric("servectl_worker_cpu_seconds_total", worker=worker) > 0
        assert server.metric("servectl_worker_resident_bytes", worker=worker) > 1e6
    # latency buckets reach the deadline (900 s): a slow answer is never just +Inf
    assert 'servectl_request_duration_seconds_bucket{le="900.0"' in text
    # OpenMetrics for a scraper that asks for it
    om = httpx.get(server.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({"x": json_values}).map(lambda v: json.dumps(v).encode())
)


def test_fuzzed_requests_never_500_or_hang(shared_serve) -> None:
    server = shared_serve({"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}})
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = [*sorted(schema["paths"]), "/", "/predict/", "/%00", "/docs"]
    client = httpx.Client(base_url=server.url, timeout=10)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        path=st.sampled_from(paths),
        body=bodies,
        content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream", ""]),
    )
    def probe(method: str, path: str, body: bytes, content_type: str) -> None:
        headers = {"content-type": content_type} if content_type else {}
        r = client.request(method, path, content=body, headers=headers)
        assert r.status_code < 500, (method, path, body, r.status_code, r.text)
        if r.status_code >= 400 and path == "/predict" and method == "POST":
            assert r.json()["error"]["request_id"] == r.headers["x-request-id"]

    probe()
    client.close()
    assert httpx.get(server.url + "/ready").status_code == 200
