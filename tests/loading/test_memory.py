"""Heap trimming: `IdleTrim` trims once after the last touch, not after every batch."""

from __future__ import annotations

import asyncio

from loading import memory


def test_idle_trim_runs_once_after_the_last_touch(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "trim_heap", lambda: calls.append(asyncio.get_event_loop().time()))

    async def batches():
        trim = memory.IdleTrim(after_s=0.05)
        for _ in range(5):  # back-to-back batches: each touch pushes the trim back
            trim.touch()
            await asyncio.sleep(0.01)
        assert calls == []
        await asyncio.sleep(0.1)
        assert len(calls) == 1

    asyncio.run(batches())
