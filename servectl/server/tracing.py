"""OpenTelemetry traces (`server.tracing`, the `otel` extra): one span per request, made when
its answer is sent, with children for its wait in the queue and its time in a worker.

Spans are built after the fact from the times the edge and the scheduler already keep
(nothing is added to the hot path while tracing is off, and little while it is on); a
client's W3C `traceparent` makes the request span its child. Export is OTLP/HTTP in batches.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from servectl.spec import TracingSpec

if TYPE_CHECKING:
    from servectl.server.asgi import Scope
    from servectl.server.request import Request


STAGES = ("decode", "predict", "encode")  # the worker span's children, in Stages' order


class TraceRequests:
    """An edge observer that records each request as a span tree."""

    def __init__(self, spec: TracingSpec) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(
            resource=Resource.create({"service.name": spec.service_name}),
            sampler=ParentBased(TraceIdRatioBased(spec.sample_ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=spec.otlp_endpoint)))
        self.tracer = self.provider.get_tracer("servectl")
        self.propagator = TraceContextTextMapPropagator()
        self.server_kind = SpanKind.SERVER

    def __call__(self, scope: Scope, request: Request) -> None:
        # perf_counter times -> epoch nanoseconds, by the offset between the two clocks now
        offset = time.time_ns() - int(time.perf_counter() * 1e9)

        def ns(t: float) -> int:
            return int(t * 1e9) + offset

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.items()}
        parent = self.propagator.extract(carrier=headers)
        method, path = scope["method"], scope["path"]
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "http.response.status_code": request.status,
            "servectl.request_id": request.id,
        }
        if request.model:
            attributes["servectl.model"] = request.model
        span = self.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=self.server_kind,
            start_time=ns(request.started),
            attributes=attributes,
        )
        pending = request.pending
        if pending is not None and span.is_recording():
            from opentelemetry import trace

            inside = trace.set_span_in_context(span)
            sent = pending.sent_at or pending.done_at  # never sent: it waited until answered
            queue = self.tracer.start_span("queue", context=inside, start_time=ns(pending.queued_at))
            queue.end(end_time=ns(sent or pending.queued_at))
            if pending.sent_at:
                worker = self.tracer.start_span("worker", context=inside, start_time=ns(pending.sent_at))
                worker.set_attribute("servectl.route", pending.route)
                if pending.stages is not None:  # the worker's own timings, laid end to end from when it got the batch
                    in_worker = trace.set_span_in_context(worker)
                    at = pending.sent_at
                    for name, seconds in zip(STAGES, pending.stages.__struct_fields__, strict=True):
                        spent = getattr(pending.stages, seconds)
                        stage = self.tracer.start_span(name, context=in_worker, start_time=ns(at))
                        at += spent
                        stage.end(end_time=ns(at))
                worker.end(end_time=ns(pending.done_at or pending.sent_at))
        span.end(end_time=ns(request.started + request.elapsed))

    def close(self) -> None:
        """Send what is still buffered (at shutdown)."""
        self.provider.shutdown()
