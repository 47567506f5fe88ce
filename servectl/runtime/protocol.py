"""Messages between the API process and a worker: plain tuples, one pickle per batch.

API -> worker:   (BATCH, batch_id, [(key, request_id, body_bytes), ...])
                 (STOP,)
worker -> API:   (READY, HandlerInfo)
                 (SETUP_FAILED, message)
                 (RESULTS, batch_id, [(key, status, body_bytes), ...], predict_seconds)
"""

from __future__ import annotations

BATCH = "batch"
STOP = "stop"
READY = "ready"
SETUP_FAILED = "setup_failed"
RESULTS = "results"

# one request inside a batch message, and its answer
Item = tuple[int, str, bytes]
Result = tuple[int, int, bytes]
