"""The hand-written part of every generated Python client: HTTP, auth, retries, streams, errors.

`client-gen` copies this module's source, from the marker below, into each client it writes
(after the generated models), so a client needs only httpx and pydantic. It is edited and
type-checked here, with servectl; `DEFAULT_URL` is replaced by the deployment's address.
"""

# --- client runtime: copied into generated clients from here ---
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SERVECTL_URL"
API_KEY_ENV = "SERVECTL_API_KEY"
RETRY_STATUSES = (429, 503)
_MEDIA = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}


class APIError(Exception):
    """An answer that is not a success: its HTTP status, request id and body (parsed JSON
    when it is JSON, else text)."""

    def __init__(self, status: int, request_id: str | None, body: Any) -> None:
        self.status = status
        self.request_id = request_id
        self.body = body
        super().__init__(f"HTTP {status}: {_message(body)} (request id {request_id})")


class StreamError(APIError):
    """An error sent as the last event of a stream that had started (its status was 200)."""


def _message(body: Any) -> str:
    error = body.get("error", body.get("detail")) if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error if error is not None else body)[:500]


def _api_error(response: httpx.Response) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return APIError(response.status_code, response.headers.get("x-request-id"), body)


def retry_delay(response: httpx.Response, attempt: int, backoff_s: float, max_delay_s: float) -> float:
    """Seconds to wait before retrying: the server's Retry-After (seconds or an HTTP date)
    when it sent one, else exponential back-off; never more than `max_delay_s`."""
    delay = backoff_s * 2**attempt
    value = response.headers.get("retry-after")
    if value:
        try:
            delay = float(value)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    return max(0.0, min(float(delay), max_delay_s))


def dump(body: Any, flag: str | None = None) -> Any:
    """A request body as JSON data: models without the fields left unset (the server's
    defaults apply); `flag` set true (the field that asks for a stream)."""
    data = body.model_dump(mode="json", by_alias=True, exclude_unset=True) if isinstance(body, BaseModel) else body
    if flag is not None:
        data = {**dict(data), flag: True}
    return data


class _Events:
    """Lines of an NDJSON or SSE stream in, JSON values out; error events raise."""

    def __init__(self, fmt: str, done: str | None, request_id: str | None) -> None:
        self.sse = fmt == "sse"
        self.done = done
        self.request_id = request_id
        self.event = ""
        self.finished = False

    def feed(self, line: str) -> list[Any]:
        if not self.sse:
            if not line.strip():
                return []
            value = json.loads(line)
            error = value.get("error") if isinstance(value, dict) and len(value) == 1 else None
            if isinstance(error, dict) and {"type", "message"} <= error.keys():  # servectl's error shape
                raise StreamError(200, self.request_id, value)
            return [value]
        if not line:
            self.event = ""
        elif line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if self.done is not None and data == self.done:
                self.finished = True
                return []
            if self.event == "error":
                raise StreamError(200, self.request_id, json.loads(data))
            return [json.loads(data)]
        return []


class _ClientBase:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        retries: int,
        backoff_s: float,
        max_delay_s: float,
    ) -> None:
        self.base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_delay_s = max_delay_s

    def _retry_in(self, response: httpx.Response, attempt: int, answers: tuple[int, ...]) -> float | None:
        """Seconds to wait before trying again, or None when this answer is final."""
        status = response.status_code
        if status not in RETRY_STATUSES or status in answers or attempt >= self.retries:
            return None
        return retry_delay(response, attempt, self.backoff_s, self.max_delay_s)

    def _stream_headers(self, fmt: str) -> dict[str, str]:
        return {**self.headers, "Accept": _MEDIA[fmt]}


class SyncClientBase(_ClientBase):
    """Blocking calls over one `httpx.Client` (connections are reused; close it when done)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_delay_s: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        """`base_url` defaults to $SERVECTL_URL, then the deployment's address; `api_key`
        to $SERVECTL_API_KEY. 429 and 503 answers are retried up to `retries` times."""
        super().__init__(base_url, api_key, timeout, retries, backoff_s, max_delay_s)
        self.http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SyncClientBase:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, answers: tuple[int, ...] = ()) -> httpx.Response:
        for attempt in itertools.count():
            response = self.http.request(method, self.base_url + path, json=body, headers=self.headers)
            if response.status_code < 300 or response.status_code in answers:
                return response
            wait = self._retry_in(response, attempt, answers)
            if wait is None:
                raise _api_error(response)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def stream(self, method: str, path: str, body: Any, fmt: str, done: str | None) -> Iterator[Any]:
        """Parsed chunks as they arrive; a refusal before the stream starts is retried."""
        for attempt in itertools.count():
            url = self.base_url + path
            with self.http.stream(method, url, json=body, headers=self._stream_headers(fmt)) as response:
                if response.status_code >= 300:
                    response.read()
                    wait = self._retry_in(response, attempt, ())
                    if wait is None:
                        raise _api_error(response)
                    time.sleep(wait)
                    continue
                events = _Events(fmt, done, response.headers.get("x-request-id"))
                for line in response.iter_lines():
                    yield from events.feed(line)
                    if events.finished:
                        return
                return


class AsyncClientBase(_ClientBase):
    """Calls on asyncio over one `httpx.AsyncClient` (close it when done)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_delay_s: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """`base_url` defaults to $SERVECTL_URL, then the deployment's address; `api_key`
        to $SERVECTL_API_KEY. 429 and 503 answers are retried up to `retries` times."""
        super().__init__(base_url, api_key, timeout, retries, backoff_s, max_delay_s)
        self.http = http or httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClientBase:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: Any = None, answers: tuple[int, ...] = ()) -> httpx.Response:
        for attempt in itertools.count():
            response = await self.http.request(method, self.base_url + path, json=body, headers=self.headers)
            if response.status_code < 300 or response.status_code in answers:
                return response
            wait = self._retry_in(response, attempt, answers)
            if wait is None:
                raise _api_error(response)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def stream(self, method: str, path: str, body: Any, fmt: str, done: str | None) -> AsyncIterator[Any]:
        """Parsed chunks as they arrive; a refusal before the stream starts is retried."""
        for attempt in itertools.count():
            url = self.base_url + path
            async with self.http.stream(method, url, json=body, headers=self._stream_headers(fmt)) as response:
                if response.status_code >= 300:
                    await response.aread()
                    wait = self._retry_in(response, attempt, ())
                    if wait is None:
                        raise _api_error(response)
                    await asyncio.sleep(wait)
                    continue
                events = _Events(fmt, done, response.headers.get("x-request-id"))
                async for line in response.aiter_lines():
                    for value in events.feed(line):
                        yield value
                    if events.finished:
                        return
                return
