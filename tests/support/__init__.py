"""What the tests share besides their fixtures (those are declared in tests/conftest.py):

- `paths`: the repository's root and the test handlers;
- `servers`: a real `servectl serve` process (`Server`), raw sockets to it, specs on disk,
  an app on uvicorn in the test's own loop (`protocol_server`);
- `specs`: the specs tests serve (toolbox, streamer, echo LLM, tiny GPT-2, MiniLM);
- `early`: servers and runs started when the session starts (the example configs, the slow
  models, Ray in its own network namespace);
- `stock`: stock uvicorn, the peer of raw-framing comparisons;
- `fakeloop`: a loop whose time moves only when a test says, and a transport that keeps
  what is written (the connection layer's timers without sleeping);
- `models`, `openapi`: ground truths and document helpers for the checks.
"""
