"""Scheduler, supervisor and worker in one process (thread workers over the in-memory
channel), with real handler code and no HTTP: what a request's future and stream get."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from servectl.outcome import ENDED, GONE, STREAMING, Answer, Failure, Outcome, Reply
from servectl.runtime.inmemory import InProcess
from servectl.runtime.scheduler import NoWorkers, Pending
from servectl.spec import Spec

ROOT = Path(__file__).resolve().parents[2]
KIT = str(ROOT / "tests" / "runtime" / "handlers" / "kit.py")
STREAMER = str(ROOT / "tests" / "handlers" / "streamer.py")
TEXT_STATS = str(ROOT / "handlers" / "text_stats.py")
CRASHED = "the inference worker holding this request crashed; it was not completed"


def spec(handler: str, **sections: Any) -> Spec:
    sections.setdefault("batching", {"max_batch_size": 4, "max_wait_ms": 0})
    return Spec(handler=handler, **sections)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=20))


async def answer(pending: Pending) -> Outcome:
    return await asyncio.wait_for(pending.future, timeout=5)


async def replied(pending: Pending) -> Any:
    outcome = await answer(pending)
    assert isinstance(outcome, Reply), outcome
    return orjson.loads(outcome.body)


async def streamed(pending: Pending) -> tuple[list[Any], Answer]:
    """A stream's chunks (parsed) and its final answer."""
    assert await answer(pending) is STREAMING
    assert pending.stream is not None
    chunks = []
    while True:
        item = await asyncio.wait_for(pending.stream.get(), timeout=5)
        if not isinstance(item, bytes):
            return chunks, item
        chunks.append(orjson.loads(item))


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


# --- plain requests -----------------------------------------------------------------


def test_a_typed_handler_replies_and_a_bad_field_is_a_422_naming_it() -> None:
    async def test() -> None:
        async with InProcess(spec(TEXT_STATS)) as rt:
            ok = rt.scheduler.submit("r0", body(text="good and fast"))
            assert await replied(ok) == {"words": 3, "characters": 13, "sentiment": 0.75}
            empty, missing, malformed = (
                rt.scheduler.submit(f"r{i}", b) for i, b in enumerate([body(text=""), b"{}", b"{"])
            )
            failure = await answer(empty)
            assert isinstance(failure, Failure) and (failure.status, failure.kind) == (422, "validation_error")
            assert failure.message == "invalid request: text"
            assert [d["loc"] for d in failure.detail] == [["text"]] and failure.detail[0]["type"] == "string_too_short"
            failure = await answer(missing)
            assert isinstance(failure, Failure) and failure.detail[0]["type"] == "missing"
            failure = await answer(malformed)
            assert isinstance(failure, Failure) and (failure.status, failure.kind) == (400, "bad_request")

    run(test)


def test_requests_queued_while_the_worker_is_busy_form_batches() -> None:
    async def test() -> None:
        async with InProcess(spec(KIT)) as rt:
            first = rt.scheduler.submit("first", body(x=1, sleep=0.05))
            rest = [rt.scheduler.submit(f"r{i}", body(x=i)) for i in range(6)]
            assert (await replied(first))["batch_size"] == 1  # a lone request never waits
            answers = [await replied(p) for p in rest]
            assert [a["y"] for a in answers] == [i**2 for i in range(6)]
            assert [a["batch_size"] for a in answers] == [4, 4, 4, 4, 2, 2]
            assert rt.scheduler.batches_sent == 3

    run(test)


def test_a_failing_request_gets_a_500_while_its_batch_mates_succeed() -> None:
    async def test() -> None:
        async with InProcess(spec(KIT)) as rt:
            blocker = rt.scheduler.submit("blocker", body(sleep=0.03))
            mates = [rt.scheduler.submit(f"r{i}", body(x=i, fail=i == 1)) for i in range(3)]
            await answer(blocker)
            assert await answer(mates[1]) == Failure(
                500, "handler_error", "predict failed: ValueError: boom: the model rejected this input"
            )
            assert [(await replied(mates[i]))["y"] for i in (0, 2)] == [0, 4]

    run(test)


def test_a_wrong_output_count_fails_its_batch_naming_the_counts() -> None:
    async def test() -> None:
        async with InProcess(spec(KIT)) as rt:
            blocker = rt.scheduler.submit("blocker", body(sleep=0.03))
            pair = [rt.scheduler.submit("a", body(wrong_length=True)), rt.scheduler.submit("b", body())]
            await answer(blocker)
            msg = f"predict failed: HandlerError: {KIT}.predict returned 3 outputs for a batch of 2 inputs"
            assert [await answer(p) for p in pair] == [Failure(500, "handler_error", msg)] * 2

    run(test)


def test_many_items_of_one_request_are_predicted_max_batch_size_at_a_time() -> None:
    async def test() -> None:
        async with InProcess(spec(KIT, batching={"max_batch_size": 2, "max_wait_ms": 0})) as rt:
            outputs = await replied(rt.scheduler.submit("many", body(x=1, many=3)))
            assert outputs == [{"y": 1.0, "batch_size": 2}, {"y": 4.0, "batch_size": 2}, {"y": 9.0, "batch_size": 1}]

    run(test)


# --- streams ------------------------------------------------------------------------


def test_a_stream_sends_its_chunks_then_ends() -> None:
    async def test() -> None:
        async with InProcess(spec(STREAMER)) as rt:
            chunks, end = await streamed(rt.scheduler.submit("s", body(n=3)))
            assert chunks == [{"token": t, "of": 3, "batch": 1} for t in range(3)]
            assert end is ENDED
            none = rt.scheduler.submit("none", body(n=0))
            assert await answer(none) is ENDED and none.stream is None  # no chunk: the future ends
            bad = await answer(rt.scheduler.submit("bad", body(n="x")))
            assert isinstance(bad, Failure) and bad.status == 422

    run(test)


def test_each_request_of_a_streamed_batch_ends_at_its_own_end() -> None:
    async def test() -> None:
        async with InProcess(spec(STREAMER)) as rt:
            blocker = rt.scheduler.submit("blocker", body(n=1, delay=0.03))
            short, long = rt.scheduler.submit("short", body(n=1, delay=0.02)), rt.scheduler.submit("long", body(n=5))
            await streamed(blocker)
            chunks, end = await streamed(short)
            assert end is ENDED and [c["batch"] for c in chunks] == [2]
            assert long.stream is not None and long.stream.qsize() <= 2  # still generating
            assert short.key not in rt.supervisor.workers[0].inflight
            chunks, end = await streamed(long)
            assert end is ENDED and [c["token"] for c in chunks] == [0, 1, 2, 3, 4]

    run(test)


def test_a_stream_cancelled_mid_way_is_gone_and_its_generation_stops(tmp_path: Path) -> None:
    steps = tmp_path / "steps.log"

    async def test() -> None:
        async with InProcess(spec(STREAMER)) as rt:
            pending = rt.scheduler.submit("c", body(n=10_000, delay=0.002, log_to=str(steps)))
            assert await answer(pending) is STREAMING
            assert pending.stream is not None
            await pending.stream.get()
            rt.scheduler.cancel(pending)
            while (item := await asyncio.wait_for(pending.stream.get(), 5)) != GONE:
                assert isinstance(item, bytes)
            computed = len(steps.read_text().splitlines())
            await asyncio.sleep(0.05)  # ~25 steps, had it gone on
            assert len(steps.read_text().splitlines()) <= computed + 1
            assert computed < 1000
            chunks, end = await streamed(rt.scheduler.submit("next", body(n=2)))  # the worker is free again
            assert (len(chunks), end) == (2, ENDED)

    run(test)


# --- no answer from the handler: refused, abandoned, crashed, hung -------------------


def test_refuse_and_abandon_answer_with_503_failures(tmp_path: Path) -> None:
    release = tmp_path / "release"

    async def test() -> None:
        async with InProcess(spec(KIT)) as rt:
            held = rt.scheduler.submit("held", body(hang_until=str(release)))
            queued = rt.scheduler.submit("queued", body())
            await asyncio.sleep(0.01)
            msg = "the server is shutting down and limits.drain_s=0s ran out before this request was answered"
            rt.scheduler.abandon(msg, "shutting_down")
            assert await answer(held) == Failure(503, "shutting_down", msg)
            assert await answer(queued) == Failure(503, "shutting_down", msg)
            with pytest.raises(NoWorkers):
                rt.scheduler.submit("late", body())
            release.touch()
            rt.scheduler.refusal = None
            waiting = [rt.scheduler.submit("w1", body(sleep=0.02)), rt.scheduler.submit("w2", body())]
            rt.scheduler.refuse("no inference worker is available: test")
            assert await answer(waiting[1]) == Failure(503, "unavailable", "no inference worker is available: test")
            rt.scheduler.accept()
            assert (await replied(rt.scheduler.submit("again", body(x=3))))["y"] == 9

    run(test)


def test_a_worker_that_ends_answers_its_requests_worker_crashed_and_is_restarted() -> None:
    async def test() -> None:
        async with InProcess(spec(KIT)) as rt:
            blocker = rt.scheduler.submit("blocker", body(sleep=0.03))
            doomed = [rt.scheduler.submit("exit", body(exit=True)), rt.scheduler.submit("mate", body())]
            await answer(blocker)
            assert [await answer(p) for p in doomed] == [Failure(503, "worker_crashed", CRASHED)] * 2
            assert rt.supervisor.problems[0] == "worker exited with code 9"
            await rt.wait_ready()
            assert (await replied(rt.scheduler.submit("after", body(x=2))))["y"] == 4
            assert rt.supervisor.restart_count == 1 and len(rt.launcher.started) == 2

    run(test)


def test_a_slot_that_keeps_crashing_gives_up_and_the_queue_is_refused() -> None:
    async def test() -> None:
        async with InProcess(spec(KIT, supervisor={"max_restarts": 0})) as rt:
            crash = rt.scheduler.submit("exit", body(exit=True))
            assert await answer(crash) == Failure(503, "worker_crashed", CRASHED)
            while rt.scheduler.refusal is None:
                await asyncio.sleep(0.001)
            with pytest.raises(
                NoWorkers, match=r"^no inference worker is available: worker 0 gave up after 0 restarts"
            ):
                rt.scheduler.submit("late", body())
            assert rt.supervisor.all_given_up

    run(test)


def test_a_hung_worker_is_replaced_and_its_requests_answered_worker_hung(tmp_path: Path) -> None:
    release = tmp_path / "release"

    async def test() -> None:
        async with InProcess(spec(KIT, supervisor={"hang_grace_s": 0.02})) as rt:
            deadline = time.perf_counter() + 0.02
            pending = rt.scheduler.submit("hang", body(hang_until=str(release)), deadline=deadline)
            outcome = await answer(pending)
            assert outcome == Failure(
                503,
                "worker_hung",
                "the inference worker holding this request hung and was replaced; it was not completed",
            )
            assert rt.supervisor.problems[0].startswith("worker hung: a batch was still running 0.02s")
            await rt.wait_ready()
            assert (await replied(rt.scheduler.submit("after", body(x=1), deadline=math.inf)))["y"] == 1
            release.touch()  # let the abandoned thread finish

    run(test)
