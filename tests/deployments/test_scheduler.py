"""The fair, token-budgeted scheduler: the planner's bounds and interleaving, shedding, order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import torch

from deployments.autoscaling import QUEUED_TOKENS
from deployments.boundary import OverloadedError
from deployments.scheduler import FairScheduler, take_round
from loading.predict import plan_passes


@dataclass
class _Encoding:
    """What the scheduler reads of a tokenizer's encoding: its ids (and a truncation flag)."""

    ids: list[int]
    overflowing: tuple = ()


def _texts(*lengths: int) -> list[_Encoding]:
    return [_Encoding(list(range(n))) for n in lengths]


class _Model:
    """A forward pass that records what it was given; answers each text's length as its score."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []

    def __call__(self, encodings: list[_Encoding]) -> torch.Tensor:
        self.passes.append([len(e.ids) for e in encodings])
        lengths = torch.tensor([float(len(e.ids)) for e in encodings])
        return torch.stack([lengths, -lengths], dim=1)


# The planner


def test_a_round_takes_one_text_per_job_in_turn_so_a_short_job_rides_at_once():
    big, short = [512] * 32, [20]
    taken = take_round([big, short], ["m", "m"], start=0, max_texts=16, max_tokens=2048)
    assert (1, 0) in taken  # the short request's only text is in this round
    assert taken[:2] == [(0, 0), (1, 0)]


def test_a_round_never_passes_the_token_or_text_bound():
    pending = [[512] * 32, [512] * 32, [100] * 5]
    taken = take_round(pending, ["m"] * 3, start=1, max_texts=16, max_tokens=2048)
    assert sum(pending[j][p] for j, p in taken) <= 2048 and len(taken) <= 16
    assert taken[0] == (1, 0)  # starts at `start`
    small = take_round([[3] * 100], ["m"], start=0, max_texts=16, max_tokens=10_000)
    assert len(small) == 16


def test_a_text_longer_than_the_budget_still_runs_alone():
    assert take_round([[4000, 10]], ["m"], start=0, max_texts=16, max_tokens=2048) == [(0, 0)]


def test_a_round_holds_one_model_the_first_waiting_jobs():
    taken = take_round([[], [10], [10], [10]], ["a", "b", "a", "b"], start=0, max_texts=16, max_tokens=2048)
    assert {j for j, _ in taken} == {1, 3}


@pytest.mark.parametrize("budget", [64, 512, 2048])
def test_passes_hold_at_most_the_padded_token_budget(budget):
    lengths = [7, 500, 33, 120, 64, 64, 300, 12, 511, 2, 90, 250]
    for idx in plan_passes(lengths, batch_size=16, max_batch_tokens=budget):
        padded = len(idx) * max(lengths[i] for i in idx)
        assert padded <= budget or len(idx) == 1
    assert sorted(i for p in plan_passes(lengths, 16, max_batch_tokens=budget) for i in p) == list(range(12))


# The scheduler


def test_answers_come_back_in_each_requests_own_order():
    async def main():
        model, scheduler = _Model(), FairScheduler(max_batch_tokens=256, batch_wait_s=0)
        a, b = _texts(50, 3, 120, 7), _texts(9, 200)
        got = await asyncio.gather(scheduler.run("m", model, a), scheduler.run("m", model, b))
        return got, scheduler

    (pa, pb), scheduler = asyncio.run(main())
    assert pa[:, 0].tolist() == [50, 3, 120, 7] and pb[:, 0].tolist() == [9, 200]
    assert scheduler.queued_tokens == 0


def test_a_short_request_is_answered_before_a_long_one_that_came_first():
    """The issue's stall: three big requests, then a short one. The short one must finish after at
    most the passes of one round, not after the big requests' 3 x 32 texts."""

    async def main():
        model = _Model()
        scheduler = FairScheduler(max_batch_tokens=2048, max_queued_tokens=10**6, batch_wait_s=0)
        finished: list[str] = []

        async def request(name: str, lengths: list[int]) -> None:
            await scheduler.run("m", model, _texts(*lengths))
            finished.append(name)

        tasks = [asyncio.create_task(request(f"big{i}", [512] * 32)) for i in range(3)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(request("short", [15])))
        await asyncio.gather(*tasks)
        return finished, model.passes

    finished, passes = asyncio.run(main())
    assert finished[0] == "short"
    assert all(len(p) * max(p) <= 2048 for p in passes)
    short_pass = next(i for i, p in enumerate(passes) if 15 in p)
    assert short_pass <= 2, passes[: short_pass + 1]  # within the first round's passes
    assert sum(len(p) for p in passes) == 3 * 32 + 1


def test_a_full_queue_refuses_at_once_with_the_seconds_to_wait():
    async def main():
        scheduler = FairScheduler(max_batch_tokens=512, max_queued_tokens=1000, batch_wait_s=0.05)
        first = asyncio.create_task(scheduler.run("m", _Model(), _texts(400, 400)))
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError) as refused:
            await scheduler.run("m", _Model(), _texts(300))
        small = await scheduler.run("m", _Model(), _texts(100))  # still fits: taken
        await first
        return refused.value, small

    refused, small = asyncio.run(main())
    assert refused.retry_after_s >= 1 and "max_queued_tokens of 1000" in str(refused)
    assert small.shape == (1, 2)


def test_an_empty_queue_takes_a_request_bigger_than_the_budget():
    async def main():
        scheduler = FairScheduler(max_batch_tokens=512, max_queued_tokens=100, batch_wait_s=0)
        return await scheduler.run("m", _Model(), _texts(300, 300))

    assert asyncio.run(main()).shape == (2, 2)


def test_a_failed_pass_fails_its_requests_and_the_worker_goes_on():
    def broken(encodings):
        raise RuntimeError("boom")

    async def main():
        scheduler = FairScheduler(batch_wait_s=0)
        with pytest.raises(RuntimeError, match="boom"):
            await scheduler.run("m", broken, _texts(5))
        return await scheduler.run("m", _Model(), _texts(5)), scheduler.queued_tokens

    answer, queued = asyncio.run(main())
    assert answer[:, 0].tolist() == [5] and queued == 0


def test_a_caller_that_goes_away_leaves_the_queue():
    async def main():
        scheduler = FairScheduler(max_batch_tokens=64, batch_wait_s=0.05)
        task = asyncio.create_task(scheduler.run("m", _Model(), _texts(*[60] * 20)))
        await asyncio.sleep(0)
        assert scheduler.queued_tokens == 1200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return scheduler.queued_tokens

    assert asyncio.run(main()) == 0


def test_models_take_turns_and_never_share_a_pass():
    async def main():
        a, b = _Model(), _Model()
        scheduler = FairScheduler(max_batch_tokens=100, batch_wait_s=0)
        await asyncio.gather(
            scheduler.run("a", a, _texts(*[50] * 6)), scheduler.run("b", b, _texts(*[50] * 6))
        )
        return a.passes, b.passes

    a, b = asyncio.run(main())
    assert sum(map(len, a)) == sum(map(len, b)) == 6


def test_a_short_request_behind_five_big_ones_rides_in_the_second_round_at_the_latest():
    """A round of 2048 tokens holds four 512-token texts: the fifth big request and the short one
    behind it must come first in the next round, not wait for the big ones' later texts."""

    async def main():
        model = _Model()
        scheduler = FairScheduler(max_batch_tokens=2048, max_queued_tokens=10**6, batch_wait_s=0)
        bigs = [asyncio.create_task(scheduler.run("m", model, _texts(*[512] * 8))) for _ in range(5)]
        await asyncio.sleep(0)
        short = asyncio.create_task(scheduler.run("m", model, _texts(15)))
        await asyncio.gather(short, *bigs)
        return model.passes

    passes = asyncio.run(main())
    texts_before_short = 0
    for p in passes:
        if 15 in p:
            break
        texts_before_short += len(p)
    assert texts_before_short <= 4 + 1, passes[:3]  # round one (4 big texts), then the fifth big's


def test_under_a_steady_load_of_single_texts_the_oldest_go_first():
    async def main():
        model = _Model()
        scheduler = FairScheduler(max_batch_size=4, max_batch_tokens=10**6, batch_wait_s=0)
        order: list[int] = []

        async def one(i: int) -> None:
            await scheduler.run("m", model, _texts(10 + i))
            order.append(i)

        await asyncio.gather(*(one(i) for i in range(12)))
        return order

    order = asyncio.run(main())
    assert [sorted(order[k : k + 4]) for k in range(0, 12, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_user_config_retunes_batching_and_the_stats_report_queued_tokens():
    scheduler = FairScheduler(max_batch_size=4, batch_wait_s=0.5)
    scheduler.configure({"max_batch_size": 8, "batch_wait_timeout_s": 0.02})
    assert (scheduler.max_batch_size, scheduler.batch_wait_s) == (8, 0.02)
    scheduler.configure({})  # keys left out go back to the YAML's defaults
    assert (scheduler.max_batch_size, scheduler.batch_wait_s) == (16, 0.01)

    async def main():
        task = asyncio.create_task(scheduler.run("m", _Model(), _texts(60, 60)))
        await asyncio.sleep(0)
        queued = scheduler.autoscaling_stats()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return queued

    assert asyncio.run(main()) == {QUEUED_TOKENS: 120.0}
