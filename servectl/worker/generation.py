"""Generation in a worker: requests become jobs whose sequences share an engine's running
batch, joining and leaving it between decoding steps.

A route whose handler has `generation_job(decoded) -> Job` is served here instead of by
`BatchRunner.run`: decode errors are answered at once, each accepted request becomes a job,
and the worker's loop calls `step()` between reading its messages, so requests that arrive
meanwhile join at the next step (continuous batching; the scheduler sends them while the
worker has room). After every step each job says what to send: a chunk, `Chunks`, `Final`
or END, as a streaming `predict` step's entry would. When a batch's last job ends, an empty
`Results` with the batch's time says the batch is complete (as for any other batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from servectl.handler import Handler
from servectl.outcome import ENDED, GONE
from servectl.runners.engine import Job
from servectl.sdk import InvalidInput
from servectl.worker.batch import BatchRunner
from servectl.worker.inbox import Outbox
from servectl.worker.messages import Request, Result, Results
from servectl.worker.streaming import send_entry


def generates(handler: Handler) -> bool:
    return callable(getattr(handler.obj, "generation_job", None))


@dataclass(slots=True)
class _Open:
    batch_id: int
    request_id: str
    job: Job
    runner: BatchRunner


class GenerationLoop:
    """Every open generation job of a worker, and the steps that advance them."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.jobs: dict[int, _Open] = {}
        self._batches: dict[int, list[float]] = {}  # batch id -> [open jobs, start time]

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def route(self, handler: Handler, runner: BatchRunner) -> Callable[[int, list[Request]], list[Result]]:
        def admit(batch_id: int, items: list[Request]) -> list[Result]:
            """Start a job per request; the answers of those that could not start."""
            results, ready = runner.decode_all(items)
            for key, rid, decoded in ready:
                try:
                    job = handler.obj.generation_job(decoded)
                except InvalidInput as exc:
                    results.append(runner.invalid(key, exc))
                except Exception as exc:
                    results.append(runner.handler_failed(key, rid, "predict", exc))
                else:
                    self.jobs[key] = _Open(batch_id, rid, job, runner)
                    self._batches.setdefault(batch_id, [0, time.perf_counter()])[0] += 1
            return results

        return admit

    def took(self, items: Iterable[Request]) -> bool:
        return any(item.key in self.jobs for item in items)

    def step(self) -> None:
        """Advance every engine once, then send what each job has to say."""
        engines = {id(o.job.engine): o.job.engine for o in self.jobs.values()}
        for engine in engines.values():
            if engine.busy:
                engine.step()
        for key, o in list(self.jobs.items()):
            try:
                entry = o.job.progress()
            except Exception as exc:
                del self.jobs[key]
                o.job.close()
                self._answer(o, o.runner.handler_failed(key, o.request_id, "predict", exc))
                continue
            if entry is not None and send_entry(o.runner, self.outbox, o.batch_id, key, o.request_id, entry):
                del self.jobs[key]
                self._ended(o)

    def cancel(self, keys: Iterable[int]) -> None:
        """Requests nobody waits for any more: their sequences leave at once."""
        for key in keys:
            o = self.jobs.pop(key, None)
            if o is not None:
                o.job.close()
                self._answer(o, Result(key, GONE))

    def end_all(self) -> None:
        """The worker stops: every open stream ends where it is."""
        for key in list(self.jobs):
            o = self.jobs.pop(key)
            o.job.close()
            self._answer(o, Result(key, ENDED))

    def _answer(self, o: _Open, result: Result) -> None:
        self.outbox.send(Results(o.batch_id, [result], None))
        self._ended(o)

    def _ended(self, o: _Open) -> None:
        batch = self._batches[o.batch_id]
        batch[0] -= 1
        if not batch[0]:
            del self._batches[o.batch_id]
            self.outbox.send(Results(o.batch_id, [], time.perf_counter() - batch[1]))
