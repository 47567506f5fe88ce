"""The dynamic batcher's policy and the scheduler's bookkeeping, with fake workers."""

from __future__ import annotations

import asyncio

import pytest

from servectl.metrics import ModelMetrics
from servectl.outcome import ENDED, STREAMING, Failure, Reply
from servectl.runtime.scheduler import STREAM_BUFFER_BYTES, NoWorkers, Pending, QueueFull, Scheduler, batch_delay
from servectl.spec import BatchingSpec
from servectl.worker.messages import Result

SPEC = BatchingSpec(max_batch_size=4, max_wait_ms=10)


def test_lone_request_never_waits() -> None:
    assert batch_delay(queued=1, oldest_wait=0.0, busy_workers=0, spec=SPEC) == 0.0


def test_full_batch_goes_at_once_even_under_load() -> None:
    assert batch_delay(queued=4, oldest_wait=0.0, busy_workers=3, spec=SPEC) == 0.0


def test_partial_batch_waits_only_under_load_and_only_up_to_the_bound() -> None:
    assert batch_delay(queued=2, oldest_wait=0.004, busy_workers=1, spec=SPEC) == pytest.approx(0.006)
    assert batch_delay(queued=2, oldest_wait=0.050, busy_workers=1, spec=SPEC) == 0.0
    no_wait = BatchingSpec(max_batch_size=4, max_wait_ms=0)
    assert batch_delay(queued=2, oldest_wait=0.0, busy_workers=1, spec=no_wait) == 0.0


class FakeWorker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.inflight: dict[int, Pending] = {}
        self.ready = True
        self.sent: list[list[tuple[int, str, bytes, str]]] = []
        self.cancelled: list[int] = []

    capacity = 0  # a continuous-generation worker's: requests it takes while busy

    @property
    def room(self) -> int:
        if not self.ready:
            return 0
        if self.capacity:
            return max(self.capacity - len(self.inflight), 0)
        return 0 if self.inflight else 1 << 30

    waiting_room = 0  # no pipelining (the handle's is tested on its own)

    def send_batch(self, batch_id: int, batch: list[Pending]) -> None:
        self.sent.append([(p.key, p.request_id, p.body, p.route) for p in batch])

    def send_cancel(self, keys: list[int]) -> None:
        self.cancelled += keys


def answer_all(scheduler: Scheduler, worker: FakeWorker) -> None:
    items = worker.sent[-1]
    scheduler.on_results(worker, [Result(k, Reply(body)) for k, _, body, _ in items], 0.001)


async def _batches_form_while_busy() -> None:
    scheduler = Scheduler(BatchingSpec(max_batch_size=4, max_wait_ms=0), 100, ModelMetrics())
    worker = FakeWorker(0)
    scheduler.add_worker(worker)
    first = scheduler.submit("a", b"1")
    assert [len(b) for b in worker.sent] == [1]  # idle worker took it at once
    rest = [scheduler.submit(f"r{i}", str(i).encode()) for i in range(6)]
    assert len(worker.sent) == 1 and len(scheduler.queue) == 6
    answer_all(scheduler, worker)
    assert await first.future == Reply(b"1")
    assert [len(b) for b in worker.sent] == [1, 4]  # batch capped at max_batch_size
    answer_all(scheduler, worker)
    answer_all(scheduler, worker)
    assert [len(b) for b in worker.sent] == [1, 4, 2]
    assert [await p.future for p in rest] == [Reply(str(i).encode()) for i in range(6)]


def test_batches_form_while_busy() -> None:
    asyncio.run(_batches_form_while_busy())


async def _continuous_worker_takes_requests_while_busy() -> None:
    """A continuous-generation worker takes new requests while it holds some, up to its
    capacity; each answered request frees a place at once."""
    scheduler = Scheduler(BatchingSpec(max_batch_size=3, max_wait_ms=50), 100, ModelMetrics())
    worker = FakeWorker(0)
    worker.capacity = 3
    scheduler.add_worker(worker)
    first = scheduler.submit("a", b"1")
    scheduler.submit("b", b"2")
    scheduler.submit("c", b"3")
    assert [len(b) for b in worker.sent] == [1, 1, 1]  # each joined at once, no max_wait
    rest = [scheduler.submit(f"r{i}", b"x") for i in range(2)]
    assert len(scheduler.queue) == 2  # full: they wait
    scheduler.on_results(worker, [Result(first.key, Reply(b"1"))], None)
    assert await first.future == Reply(b"1")
    assert [len(b) for b in worker.sent] == [1, 1, 1, 1] and len(scheduler.queue) == 1
    assert rest[0].key in worker.inflight


def test_continuous_worker_takes_requests_while_busy() -> None:
    asyncio.run(_continuous_worker_takes_requests_while_busy())


class PipelinedWorker(FakeWorker):
    """Takes a second batch while it computes one (as a WorkerHandle with batching.pipeline)."""

    done = 0

    @property
    def waiting_room(self) -> int:  # type: ignore[override]
        return 1 << 30 if len(self.sent) - self.done == 1 else 0


async def _a_full_batch_waits_behind_a_busy_pipelined_worker() -> None:
    scheduler = Scheduler(BatchingSpec(max_batch_size=4, max_wait_ms=1, pipeline=True), 100, ModelMetrics())
    worker = PipelinedWorker(0)
    scheduler.add_worker(worker)
    scheduler.submit("a", b"0")
    assert [len(b) for b in worker.sent] == [1]  # idle: at once
    for i in range(3):
        scheduler.submit(f"p{i}", b"x")
    await asyncio.sleep(0.02)
    assert [len(b) for b in worker.sent] == [1]  # a partial batch never waits behind (it would only shrink batches)
    scheduler.submit("p3", b"x")
    assert [len(b) for b in worker.sent] == [1, 4]  # full: it waits in the worker's inbox
    for i in range(4):
        scheduler.submit(f"q{i}", b"x")
    assert [len(b) for b in worker.sent] == [1, 4] and len(scheduler.queue) == 4  # at most one waits


def test_a_full_batch_waits_behind_a_busy_pipelined_worker() -> None:
    asyncio.run(_a_full_batch_waits_behind_a_busy_pipelined_worker())


async def _max_wait_holds_partial_batch_under_load() -> None:
    scheduler = Scheduler(BatchingSpec(max_batch_size=4, max_wait_ms=30), 100, ModelMetrics())
    busy, idle = FakeWorker(0), FakeWorker(1)
    scheduler.add_worker(busy)
    scheduler.submit("x", b"0")  # busy now holds one request
    scheduler.add_worker(idle)
    scheduler.submit("y", b"1")
    assert idle.sent == []  # another worker is busy: wait for more, up to 30 ms
    await asyncio.sleep(0.1)
    assert [len(b) for b in idle.sent] == [1]


def test_max_wait_holds_partial_batch_under_load() -> None:
    asyncio.run(_max_wait_holds_partial_batch_under_load())


async def _queue_limit_drop_and_lost_worker() -> None:
    metrics = ModelMetrics()
    scheduler = Scheduler(SPEC, 2, metrics)
    a, b = scheduler.submit("a", b""), scheduler.submit("b", b"")
    with pytest.raises(QueueFull):
        scheduler.submit("c", b"")
    assert scheduler.drop(a, "timeout") is True and len(scheduler.queue) == 1
    worker = FakeWorker(0)
    scheduler.add_worker(worker)
    assert [k for k, _, _, _ in worker.sent[0]] == [b.key]  # the dropped one never reached it
    assert scheduler.drop(b, "timeout") is False  # already running
    scheduler.remove_worker(worker, lambda p: Failure(503, "worker_crashed", "lost"))
    assert await b.future == Failure(503, "worker_crashed", "lost")
    scheduler.refuse("gone for good")
    with pytest.raises(NoWorkers):
        scheduler.submit("d", b"")


def test_queue_limit_drop_and_lost_worker() -> None:
    asyncio.run(_queue_limit_drop_and_lost_worker())


async def _refuse_answers_waiting_requests() -> None:
    scheduler = Scheduler(SPEC, 10, ModelMetrics())
    waiting = scheduler.submit("a", b"")
    scheduler.refuse("worker 0 gave up")
    assert await waiting.future == Failure(503, "unavailable", "worker 0 gave up")
    assert (await waiting.future).retry


def test_refuse_answers_waiting_requests() -> None:
    asyncio.run(_refuse_answers_waiting_requests())


async def _streams_end_with_an_answer_after_their_chunks() -> None:
    scheduler = Scheduler(SPEC, 10, ModelMetrics())
    worker = FakeWorker(0)
    scheduler.add_worker(worker)
    first = scheduler.submit("first", b"")  # keeps the worker busy while a batch of two queues
    streamed, empty = scheduler.submit("s", b""), scheduler.submit("e", b"")
    answer_all(scheduler, worker)
    assert await first.future == Reply(b"")
    scheduler.on_chunk(worker, first.key, b"late")  # answered already: ignored
    assert first.stream is None and worker.sent[-1] == [
        (streamed.key, "s", b"", "predict"),
        (empty.key, "e", b"", "predict"),
    ]
    scheduler.on_chunk(worker, streamed.key, b"1")
    scheduler.on_chunk(worker, streamed.key, b"2")
    assert await streamed.future is STREAMING
    scheduler.on_results(worker, [Result(streamed.key, ENDED), Result(empty.key, ENDED)], 0.001)
    assert streamed.stream is not None
    assert [streamed.stream.get_nowait() for _ in range(3)] == [b"1", b"2", ENDED]
    assert await empty.future is ENDED and empty.stream is None  # no chunk: the future says it ended


def test_streams_end_with_an_answer_after_their_chunks() -> None:
    asyncio.run(_streams_end_with_an_answer_after_their_chunks())


async def _slow_reader_is_cut_and_abandon_answers_everything() -> None:
    scheduler = Scheduler(BatchingSpec(max_batch_size=1, max_wait_ms=0), 10, ModelMetrics())
    worker = FakeWorker(0)
    scheduler.add_worker(worker)
    slow, queued = scheduler.submit("slow", b""), scheduler.submit("queued", b"")
    big = b"x" * (STREAM_BUFFER_BYTES // 2 + 1)
    scheduler.on_chunk(worker, slow.key, big)
    scheduler.on_chunk(worker, slow.key, big)  # over the buffer: generation stopped for it
    assert worker.cancelled == [slow.key]
    assert slow.stream is not None and slow.stream.qsize() == 3
    cut = [slow.stream.get_nowait() for _ in range(3)][-1]
    assert isinstance(cut, Failure) and (cut.status, cut.kind) == (503, "slow_reader")
    assert cut.message.startswith("the client read this stream too slowly: over 16 MiB")
    scheduler.on_chunk(worker, slow.key, b"more")  # cut off: dropped
    assert slow.stream.empty()
    scheduler.abandon("draining ran out", "shutting_down")
    assert await queued.future == Failure(503, "shutting_down", "draining ran out")
    assert slow.stream.get_nowait() == Failure(503, "shutting_down", "draining ran out")
    assert worker.cancelled == [slow.key, slow.key]
    with pytest.raises(NoWorkers) as refused:
        scheduler.submit("late", b"")
    assert refused.value.kind == "shutting_down"


def test_slow_reader_is_cut_and_abandon_answers_everything() -> None:
    asyncio.run(_slow_reader_is_cut_and_abandon_answers_everything())
