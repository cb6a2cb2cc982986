"""The Qt-driven asyncio loop: callbacks ready to run go through one Qt timer per batch (not
one each), in order; those they queue run in the next batch; cancelled ones never run."""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6 import QtCore

from neuron_desk.qt.asyncbridge import QtLoop


def test_ready_callbacks_run_in_order_through_one_timer_per_batch(
    loop: asyncio.AbstractEventLoop, monkeypatch: Any
) -> None:
    assert isinstance(loop, QtLoop)
    timers: list[float] = []
    real = loop._timer.add_callback  # type: ignore[attr-defined]

    def counting(handle: asyncio.Handle, delay: float = 0) -> asyncio.Handle:
        timers.append(delay)
        return real(handle, delay)  # type: ignore[no-any-return]

    monkeypatch.setattr(loop._timer, "add_callback", counting)  # type: ignore[attr-defined]
    ran: list[object] = []

    async def scenario() -> None:
        batch_timers = len(timers)
        for i in range(50):
            loop.call_soon(ran.append, i)
        skipped = loop.call_soon(ran.append, "cancelled")
        skipped.cancel()
        loop.call_soon(lambda: loop.call_soon(ran.append, "queued by a callback"))
        assert len(timers) - batch_timers <= 1  # one Qt timer for the 52 callbacks
        await asyncio.sleep(0.01)

    loop.run_until_complete(scenario())
    assert ran == [*range(50), "queued by a callback"]


def test_tasks_futures_and_threads_still_work(loop: asyncio.AbstractEventLoop) -> None:
    """Task steps, a worker thread's result coming back, a delayed callback and Qt's own
    timers, interleaved."""
    fired: list[str] = []
    QtCore.QTimer.singleShot(0, lambda: fired.append("qt timer"))

    async def worker(n: int) -> int:
        await asyncio.sleep(0)
        return await asyncio.to_thread(lambda: n * n)

    async def scenario() -> list[int]:
        loop.call_later(0.01, fired.append, "later")
        squares = await asyncio.gather(*(worker(n) for n in range(20)))
        await asyncio.sleep(0.03)
        return list(squares)

    assert loop.run_until_complete(scenario()) == [n * n for n in range(20)]
    assert sorted(fired) == ["later", "qt timer"]
