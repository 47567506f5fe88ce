"""A rolling reload in one process (thread workers): new workers set up while the old ones
serve, then take over one by one; a failing canary changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from servectl.outcome import Reply
from servectl.runtime.inmemory import InProcess
from servectl.runtime.rollout import ReloadFailed
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot

VERSIONED = str(Path(__file__).resolve().parent / "handlers" / "versioned.py")


def versioned(version: int, fail: bool = False) -> Spec:
    example: dict[str, Any] = {"version": version, "fail": fail}
    return Spec(handler=VERSIONED, model={"example": example}, batching={"max_batch_size": 4, "max_wait_ms": 0})


def slots(n: int) -> list[WorkerSlot]:
    return [WorkerSlot(i, "cpu") for i in range(n)]


async def steady(rt: InProcess, stop: asyncio.Event, answers: list[Any]) -> None:
    """One request every millisecond until told to stop; every outcome kept."""
    futures = []
    while not stop.is_set():
        futures.append(rt.scheduler.submit(f"r{len(futures)}", b"{}").future)
        await asyncio.sleep(0.001)
    answers.extend(await asyncio.gather(*futures))


async def _rolls_without_failing_a_request() -> None:
    async with InProcess(versioned(1), workers=2) as rt:
        stop, answers = asyncio.Event(), []
        load = asyncio.create_task(steady(rt, stop, answers))
        await asyncio.sleep(0.05)
        await rt.supervisor.reload(versioned(2), slots(2))
        await asyncio.sleep(0.05)
        stop.set()
        await load
        assert answers and all(isinstance(a, Reply) for a in answers), [a for a in answers if not isinstance(a, Reply)]
        versions = [orjson.loads(a.body)["version"] for a in answers]
        assert versions[0] == 1 and versions[-1] == 2  # (while rolling, old and new workers both serve)
        assert [s.index for s in rt.supervisor.slots] == [2, 3] and rt.supervisor.all_ready
        assert rt.metrics.restarts["reload"] == 2 and rt.supervisor.spec.model.example["version"] == 2
        await asyncio.sleep(0.1)
        assert not rt.supervisor.retiring, "the old workers stopped once they held nothing"


def test_reload_rolls_workers_without_failing_a_request() -> None:
    asyncio.run(asyncio.wait_for(_rolls_without_failing_a_request(), 30))


async def _failing_canary_changes_nothing() -> None:
    async with InProcess(versioned(1), workers=2) as rt:
        before = [s.index for s in rt.supervisor.slots]
        with pytest.raises(ReloadFailed, match=r"version 9 cannot load.*old workers keep serving"):
            await rt.supervisor.reload(versioned(9, fail=True), slots(2))
        assert [s.index for s in rt.supervisor.slots] == before and rt.supervisor.all_ready
        assert not rt.fatal, "a failed reload is not the server's fatal error"
        outcome = await rt.scheduler.submit("after", b"{}").future
        assert isinstance(outcome, Reply) and orjson.loads(outcome.body)["version"] == 1
        assert rt.metrics.restarts["reload"] == 0 and not rt.supervisor.problems


def test_a_failing_canary_changes_nothing() -> None:
    asyncio.run(asyncio.wait_for(_failing_canary_changes_nothing(), 30))


async def _one_reload_at_a_time() -> None:
    async with InProcess(versioned(1), workers=1) as rt:
        first = asyncio.create_task(rt.supervisor.reload(versioned(2), slots(1)))
        await asyncio.sleep(0)
        with pytest.raises(ReloadFailed, match="already running"):
            await rt.supervisor.reload(versioned(3), slots(1))
        await first
        outcome = await rt.scheduler.submit("after", b"{}").future
        assert isinstance(outcome, Reply) and orjson.loads(outcome.body)["version"] == 2


def test_one_reload_at_a_time() -> None:
    asyncio.run(asyncio.wait_for(_one_reload_at_a_time(), 30))
