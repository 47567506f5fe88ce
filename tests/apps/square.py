"""A bare ASGI app that answers `POST /predict {"x": N}` with `{"y": N*N}` and `GET /health`
with `{"status": "ok"}`: stock uvicorn's side of the raw-framing comparisons."""

import json


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST" and scope["path"] == "/predict":
        try:
            status, answer = 200, {"y": float(json.loads(body)["x"]) ** 2}
        except (ValueError, KeyError, TypeError):  # as servectl answers a body it cannot read
            status, answer = 400, {"error": "bad request body"}
    elif scope["path"] == "/health":
        status, answer = 200, {"status": "ok"}
    else:
        status, answer = 404, {"error": "not found"}
    data = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
