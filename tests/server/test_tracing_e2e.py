"""Traces end to end: a real server exports OTLP/HTTP to a receiver on 127.0.0.1 (a small
HTTP server decoding the protobuf with opentelemetry-proto), and a client's `traceparent`
becomes the request span's parent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from support.specs import toolbox_spec


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP traces receiver: every span it got, with its service name."""
    spans: list[Any] = []

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
                for scope in resource.scope_spans:
                    spans.extend((service, span) for span in scope.spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", spans
    finally:
        server.shutdown()


def test_a_span_per_request_with_queue_worker_and_worker_stage_children(serve, receiver) -> None:
    endpoint, spans = receiver
    tracing = {"otlp_endpoint": endpoint, "service_name": "svc-under-test"}
    server = serve(toolbox_spec(server={"tracing": tracing}), env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent}-01", "X-Request-Id": "traced-1"}
    assert httpx.post(server.url + "/predict", json={"x": 3}, headers=headers).status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200
    deadline = time.monotonic() + 20
    names = {"POST /predict", "queue", "worker", "decode", "predict", "encode"}
    while time.monotonic() < deadline:
        got = {s.name for _, s in spans if s.trace_id.hex() == trace_id}
        if names <= got and any(s.name == "GET /health" for _, s in spans):
            break
        time.sleep(0.1)
    mine = [s for _, s in spans if s.trace_id.hex() == trace_id]
    by_name = {s.name: s for s in mine}
    assert names <= set(by_name), sorted(by_name)
    root = by_name["POST /predict"]
    assert root.parent_span_id.hex() == parent  # the client's span is its parent
    attributes = {a.key: a.value for a in root.attributes}
    assert attributes["servectl.request_id"].string_value == "traced-1"
    assert attributes["http.response.status_code"].int_value == 200
    for child in ("queue", "worker"):
        span = by_name[child]
        assert span.parent_span_id == root.span_id
        assert root.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.end_time_unix_nano <= root.end_time_unix_nano
    assert by_name["queue"].end_time_unix_nano <= by_name["worker"].start_time_unix_nano
    worker, previous_end = by_name["worker"], by_name["worker"].start_time_unix_nano
    for stage in ("decode", "predict", "encode"):  # the worker's own timings, in order, inside its span
        span = by_name[stage]
        assert span.parent_span_id == worker.span_id
        assert previous_end <= span.start_time_unix_nano <= span.end_time_unix_nano <= worker.end_time_unix_nano
        previous_end = span.end_time_unix_nano
    assert {service for service, _ in spans} == {"svc-under-test"}
    assert any(s.name == "GET /health" for _, s in spans)  # every request, not only model routes
