"""Running one batch of raw requests through a handler, in a worker: every request gets its
own answer (a `Reply`, or a `Failure` naming what went wrong), and one bad request never
fails its batch-mates."""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from pydantic import ValidationError

from servectl.handler import Handler, HandlerError
from servectl.outcome import Failure, Reply
from servectl.sdk import Final, InvalidInput, Many
from servectl.worker.codec import Framed, out_of_range, parse, serialize
from servectl.worker.inbox import Outbox
from servectl.worker.messages import Request, Result, Stages, Tokens

log = logging.getLogger("servectl.worker")

Decoded = tuple[int, str, Any]  # key, request id, what `decode` made of it


def short(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def failed(key: int, status: int, kind: str, message: str, detail: Any = None) -> Result:
    return Result(key, Failure(status, kind, message, detail))


class StageClock:
    """The time one batch spent in each stage, summed over the routes it went through."""

    def __init__(self) -> None:
        self.spent = [0.0, 0.0, 0.0]  # decode, predict, encode

    def take(self) -> Stages | None:
        """The stages measured since the last call (None: none)."""
        spent, self.spent = self.spent, [0.0, 0.0, 0.0]
        return Stages(*spent) if any(spent) else None


class BatchRunner:
    """Runs one batch of raw requests through a handler and answers every one of them."""

    def __init__(
        self, handler: Handler, max_batch_size: int, outbox: Outbox | None = None, clock: StageClock | None = None
    ) -> None:
        self.handler = handler
        self.max_batch_size = max_batch_size
        self.clock = clock or StageClock()
        self.outbox = outbox  # where an answer's token counts go (`encode` returned a Final)
        # the status of a request its type does not accept: 422, or the protocol's (OpenAI: 400)
        self.invalid_status = int(getattr(handler.obj, "invalid_status", 422))

    def invalid(self, key: int, exc: InvalidInput) -> Result:
        detail = [{"loc": exc.field.split("."), "msg": str(exc), "type": "invalid_input"}]
        kind = exc.code or ("not_found" if exc.status == 404 else "validation_error")
        return failed(key, exc.status, kind, f"invalid {exc.field}: {exc}", detail)

    def handler_failed(self, key: int, rid: str, stage: str, exc: BaseException) -> Result:
        """A hook raised: logged with its traceback and request id, answered with a 500."""
        log.error(
            "request %s: %s.%s failed\n%s",
            rid,
            self.handler.name,
            stage,
            "".join(traceback.format_exception(exc)),
            extra={"request_id": rid, "worker": os.getpid()},
        )
        return failed(key, 500, "handler_error", f"{stage} failed: {short(exc)}")

    def run(self, items: list[Request]) -> list[Result]:
        t0 = time.perf_counter()
        results, ready = self.decode_all(items)
        self.clock.spent[0] += time.perf_counter() - t0
        if ready:
            results.extend(self._predict(ready))
        return results

    def decode_all(self, items: list[Request]) -> tuple[list[Result], list[Decoded]]:
        """Parse, validate and decode each request: error answers, and what is ready to predict."""
        results: list[Result] = []
        ready: list[Decoded] = []
        for item in items:
            key = item.key
            try:
                payload = self._parse(item)
            except InvalidInput as exc:
                results.append(self.invalid(key, exc))
                continue
            except ValueError as exc:
                results.append(failed(key, 400, "bad_request", f"malformed JSON: {exc}"))
                continue
            try:
                request = self.handler.validate(payload)
            except ValidationError as exc:
                detail = [
                    {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
                ]
                fields = ", ".join(".".join(map(str, d["loc"])) or "<body>" for d in detail)
                results.append(
                    failed(key, self.invalid_status, "validation_error", f"invalid request: {fields}", detail)
                )
                continue
            try:
                ready.append((key, item.request_id, self.handler.decode(request)))
            except InvalidInput as exc:
                results.append(self.invalid(key, exc))
            except Exception as exc:
                results.append(self.handler_failed(key, item.request_id, "decode", exc))
        return results, ready

    def _predict(self, ready: list[Decoded]) -> list[Result]:
        """Predict every item, max_batch_size at a time; regroup outputs by request."""
        flat = [(i, item) for i, (_, _, x) in enumerate(ready) for item in (x if isinstance(x, Many) else [x])]
        outputs: dict[int, list[Any]] = {}
        errors: dict[int, Exception] = {}
        t0 = time.perf_counter()
        for start in range(0, len(flat), self.max_batch_size):
            self._predict_chunk(flat[start : start + self.max_batch_size], outputs, errors)
        t1 = time.perf_counter()
        self.clock.spent[1] += t1 - t0
        results = []
        for i, (key, rid, decoded) in enumerate(ready):
            exc = errors.get(i)
            if isinstance(exc, InvalidInput):
                results.append(self.invalid(key, exc))
            elif exc is not None:
                results.append(self.handler_failed(key, rid, "predict", exc))
            else:
                out = outputs.get(i, [])
                results.append(self.encode(key, rid, out if isinstance(decoded, Many) else out[0]))
        self.clock.spent[2] += time.perf_counter() - t1
        return results

    def _predict_chunk(
        self, chunk: list[tuple[int, Any]], outputs: dict[int, list[Any]], errors: dict[int, Exception]
    ) -> None:
        h = self.handler
        try:
            outs = h.unbatch(h.predict(h.batch([item for _, item in chunk])), len(chunk))
        except Exception as exc:
            if len(chunk) > 1 and not isinstance(exc, HandlerError):
                # one bad input must not fail its batch-mates: retry each on its own
                for entry in chunk:
                    self._predict_chunk([entry], outputs, errors)
                return
            for i, _ in chunk:
                errors.setdefault(i, exc)
            return
        for (i, _), out in zip(chunk, outs, strict=True):
            outputs.setdefault(i, []).append(out)

    def encode(self, key: int, rid: str, output: Any) -> Result:
        try:
            encoded = self.handler.encode(output)
        except Exception as exc:
            return self.handler_failed(key, rid, "encode", exc)
        if isinstance(encoded, Final):
            if self.outbox is not None and (encoded.tokens or encoded.prompt_tokens):
                self.outbox.send(Tokens(key, encoded.prompt_tokens, encoded.tokens))
            encoded = encoded.value
        return self.serialize(key, rid, encoded)

    def _parse(self, item: Request) -> Any:
        """The request's JSON; a framed body (JSON, then binary) goes to the handler's
        `parse_body` (V2's binary tensor data), which only protocol adapters have (V2's
        checks each number's range where it makes its arrays). A number beyond a 64-bit
        float (1e999: valid JSON, parsed as infinity) is the client's error: a 400 naming it."""
        hook = getattr(self.handler.obj, "parse_body", None)
        if hook is not None:
            return hook(item.body, item.json_length)
        if item.json_length is not None:
            raise InvalidInput("this route takes JSON bodies only", "body", status=400)
        payload = parse(item.body)
        loc = out_of_range(payload)
        if loc is not None:
            where = ".".join(map(str, loc)) or "body"
            raise InvalidInput("the number is beyond a 64-bit float's range (1.8e308)", where, status=400)
        return payload

    def serialize(self, key: int, rid: str, value: Any) -> Result:
        try:
            if isinstance(value, Framed):
                head = serialize(value.head)
                return Result(key, Reply(b"".join([head, *value.parts]), len(head)))
            return Result(key, Reply(serialize(value)))
        except Exception as exc:
            return self.handler_failed(key, rid, "serialize", exc)
