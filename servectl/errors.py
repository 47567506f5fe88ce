"""Every error kind servectl answers with, in one table: the `kind` a `Failure` carries (the
`error.type` of servectl's shape, OpenAI's `error.code`), its statuses and when it happens.

The reference documentation is rendered from `ERRORS`, and a test fails when the code
answers with a kind that is not here (or with a status the table does not list for it)."""

from __future__ import annotations

from typing import NamedTuple


class ErrorKind(NamedTuple):
    """One kind of error answer: the statuses it comes with, and when."""

    statuses: tuple[int, ...]
    when: str
    retry: bool = False  # answered with `Retry-After`: worth trying again later


ERRORS: dict[str, ErrorKind] = {
    "bad_request": ErrorKind(
        (400,),
        "The request does not parse: bytes that are not HTTP/1.1, malformed JSON (the parse error), a gzip or "
        "deflate body that does not inflate, a number beyond a 64-bit float (`1e999`), naming its field.",
    ),
    "invalid_json": ErrorKind((400,), "A route several models share could not read the body's `model` field."),
    "invalid_request": ErrorKind(
        (400,), "A route several models share got a body without a usable `model` (not a string, say)."
    ),
    "invalid_request_error": ErrorKind(
        (400,),
        "OpenAI routes: a parameter the server cannot honour or that is out of range; `param` names it.",
    ),
    "context_length_exceeded": ErrorKind(
        (400,), "OpenAI routes: the prompt (plus `max_tokens`) or an embedding input is longer than the context."
    ),
    "previous_response_not_found": ErrorKind(
        (400,),
        "`/v1/responses`: `previous_response_id` names a response that is unknown, evicted from the bounded store "
        "or was sent with `store: false`.",
    ),
    "unauthorized": ErrorKind(
        (401,), "A key is needed and none was sent, or a wrong one (OpenAI routes: `invalid_api_key`)."
    ),
    "forbidden": ErrorKind((403,), "An admin route while `auth.admin_keys` is not set."),
    "not_found": ErrorKind((404,), "A handler's `InvalidInput(..., status=404)`, or an unknown name on a route."),
    "model_not_found": ErrorKind((404,), "The body's or the path's model is not served; the message lists the served."),
    "unknown_url": ErrorKind((404,), "No route has this path."),
    "method_not_allowed": ErrorKind((405,), "The path exists but not for this method (model routes take POST)."),
    "request_timeout": ErrorKind(
        (408,), "Part of a request's head came, but not all of it within `server.header_timeout_s`."
    ),
    "reload_refused": ErrorKind(
        (409,), "A reload that would change what is fixed while serving (`name`, `api`), or one already running."
    ),
    "reload_failed": ErrorKind(
        (409, 500),
        "The reload's canary worker failed `setup` (500; the old workers keep serving), or it stopped part way.",
    ),
    "payload_too_large": ErrorKind((413,), "A body over `limits.max_body_mb` (a compressed body: once inflated)."),
    "unsupported_media_type": ErrorKind(
        (415,), "A `Content-Type` other than JSON, or a `Content-Encoding` other than gzip, deflate or identity."
    ),
    "validation_error": ErrorKind(
        (400, 422), "The request does not fit the handler's or the runner's types; `detail` lists the field paths."
    ),
    "invalid_spec": ErrorKind((422,), "A reload whose spec no longer loads: every problem, as `validate` prints it."),
    "rate_limit_exceeded": ErrorKind(
        (429,), "The key's request or token bucket is empty (`limits.rate`, `auth.keys`).", retry=True
    ),
    "headers_too_large": ErrorKind(
        (431,), "The request line plus headers are over `server.max_header_kb`; the connection is closed."
    ),
    "handler_error": ErrorKind(
        (500,),
        "A hook raised (for that request only), an output could not be serialised (a NaN: `non-finite output`), "
        "or `predict` returned the wrong number of outputs.",
    ),
    "internal_error": ErrorKind((500,), "A fault in servectl itself; the log has the traceback."),
    "http_error": ErrorKind((400, 404, 405), "An error FastAPI raised on a non-model route, in servectl's shape."),
    "overloaded": ErrorKind(
        (503,), "The model's queue is full (`limits.max_queue`), or too many connections.", retry=True
    ),
    "shutting_down": ErrorKind((503,), "The server is draining; what is still open at `limits.drain_s`.", retry=True),
    "slow_reader": ErrorKind(
        (503,), "A streaming client read slower than its stream, past 16 MiB waiting for it.", retry=True
    ),
    "unavailable": ErrorKind((503,), "Every worker of the model was given up (`supervisor.max_restarts`).", retry=True),
    "worker_crashed": ErrorKind(
        (503,), "The worker holding the request crashed; it is restarted, the request is not retried.", retry=True
    ),
    "worker_hung": ErrorKind(
        (503,), "The hang watchdog replaced the worker holding the request (`supervisor.hang_grace_s`).", retry=True
    ),
    "timeout": ErrorKind((504,), "Not answered within `limits.timeout_s` (counted from the request's start)."),
}
