"""Messages between the API process and a worker: plain tuples, one pickle per batch.

API -> worker:   (BATCH, batch_id, [(key, request_id, body_bytes, route), ...])
                 (CANCEL, [key, ...])      stop streaming to these requests
                 (STOP,)
worker -> API:   (READY, HandlerInfo)
                 (SETUP_FAILED, message)
                 (CHUNK, key, body_bytes)  one streamed chunk, already serialized
                 (TOKENS, n)               tokens generated (for the tokens/s metric)
                 (RESULTS, batch_id, [(key, status, body_bytes), ...], predict_seconds | None)

A request's result ends it; for a stream it comes after its chunks (status 200 with an
empty body for a clean end, else an error body). A batch may answer in several RESULTS
messages (streams that end early); the last one carries the batch's predict time.
"""

from __future__ import annotations

BATCH = "batch"
STOP = "stop"
CANCEL = "cancel"
CHUNK = "chunk"
TOKENS = "tokens"
READY = "ready"
SETUP_FAILED = "setup_failed"
RESULTS = "results"

# one request inside a batch message, and its answer
Item = tuple[int, str, bytes, str]  # route: which API decodes it ("predict" or "v2")
Result = tuple[int, int, bytes]


class PipeClosed(BaseException):
    """The API process closed a worker's pipe (it stops, or is gone): the worker ends quietly.
    A BaseException, so that no `except Exception` around handler code takes it for a
    handler error."""
