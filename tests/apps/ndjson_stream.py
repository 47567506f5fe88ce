"""A bare ASGI app that streams five NDJSON chunks 20 ms apart: a streaming peer for bench."""

import asyncio


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]})
    for i in range(5):
        await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b'{"token": %d}\n' % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
