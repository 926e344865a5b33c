"""The heavy-mix and pass-tokens scripts: big-request texts, the summary's arithmetic, replica
restarts told from scaling, and a forward-pass timing on the tiny model."""

from __future__ import annotations

import pytest

from benchmarks.harness.load import random_texts
from benchmarks.heavy_mix import MixConfig, joined_texts, replica_changes, summarize, summary_lines, targets
from benchmarks.pass_tokens import measure, pass_inputs, pass_shapes
from benchmarks.pass_tokens import summary_lines as pass_table

# -- big-request texts ------------------------------------------------------------------------------


def test_joined_texts_are_real_words_cut_at_a_word_and_reproducible():
    pool = ["one two three", "  four\nfive  ", "six seven eight nine ten", " "]
    texts = joined_texts(pool, count=5, chars=40, seed=1)
    assert len(texts) == 5 and texts == joined_texts(pool, count=5, chars=40, seed=1)
    words = {w for t in pool for w in t.split()}
    for text in texts:
        assert 30 <= len(text) <= 40 and "  " not in text and "\n" not in text
        assert set(text.split()) <= words  # no word cut in half
    assert joined_texts(pool, 5, 40, seed=2) != texts
    with pytest.raises(ValueError, match="pool must hold a non-blank text"):
        joined_texts([" "], 1, 10)


def test_the_largest_valid_request_reaches_512_tokens_per_text(tokenizer):
    texts = joined_texts(random_texts(100, seed=0), count=32, chars=MixConfig.big_chars)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    assert len(texts) == 32 and all(2900 <= len(t) <= 3000 for t in texts)
    assert min(lengths) > 512  # cut to 512 by the server: 32 x 512 = max_request_tokens exactly


def test_mix_config_is_checked():
    with pytest.raises(ValueError, match="seconds and intervals must be > 0"):
        MixConfig(short_every_s=0)
    with pytest.raises(ValueError, match="big_clients, big_texts, big_chars, retry_attempts must be >= 1"):
        MixConfig(big_clients=0)


# -- replicas over time -----------------------------------------------------------------------------


def test_a_replaced_replica_is_a_restart_a_scale_down_is_not():
    steady = [(0.0, {"a": 1}, 1), (1.0, {"a": 1}, 1)]
    assert replica_changes(steady)["restarts"] == 0 and replica_changes([])["restarts"] == 0
    replaced = [*steady, (2.0, {}, 1), (3.0, {"b": 2}, 1)]
    out = replica_changes(replaced)
    assert (out["restarts"], out["gone"], out["started"]) == (1, ["a"], ["b"])
    scaled = [(0.0, {"a": 1}, 1), (1.0, {"a": 1, "b": 2}, 2), (2.0, {"a": 1, "b": 2}, 1), (3.0, {"a": 1}, 1)]
    out = replica_changes(scaled)
    assert (out["restarts"], out["gone"], out["started"], out["after"]) == (0, ["b"], ["b"], {"a": 1})
    lost_while_scaled = [(0.0, {"a": 1, "b": 2}, 2), (1.0, {"b": 2}, 2)]
    assert replica_changes(lost_while_scaled)["restarts"] == 1
    new_pid = [(0.0, {"a": 1}, 1), (1.0, {"a": 7}, 1)]
    assert replica_changes(new_pid) | {"before": None} == {
        "before": None,
        "after": {"a": 7},
        "started": [],
        "gone": [],
        "pid_changed": ["a"],
        "restarts": 1,
    }


# -- the summary ------------------------------------------------------------------------------------


def _attempt(kind, t0, t1, status, retry_after=None):
    return {"kind": kind, "t0": t0, "t1": t1, "status": status, "retry_after": retry_after, "replica": "r"}


def _request(kind, t0, t1, status, attempts=1, retry_after=None, first_status=None):
    first = status if first_status is None else first_status
    return {"kind": kind, "t0": t0, "t1": t1, "attempts": attempts, "first_status": first} | {
        "status": status,
        "retry_after": retry_after,
    }


def test_summary_counts_latency_outcomes_and_refusals():
    shorts = [
        _request("short", 10.0 + i, 10.0 + i + ms / 1e3, 200) for i, ms in enumerate(range(100, 1100, 100))
    ]
    requests = [
        *shorts,
        _request("short", 30.0, 30.2, 500),  # a 5xx: lost
        _request("big", 0.0, 20.0, 200),
        _request("big", 0.0, 40.0, 200, attempts=2, first_status=503),
        _request("big", 1.0, 9.0, 503, attempts=4, retry_after="4"),  # refused for good, politely
        _request("big", 2.0, 3.0, 0),  # no answer: lost
    ]
    attempts = [_attempt("short", r["t0"], r["t1"], r["status"]) for r in requests if r["kind"] == "short"]
    attempts += [_attempt("big", 0, 20, 200), _attempt("big", 0, 1, 503, "3"), _attempt("big", 4, 40, 200)]
    attempts += [_attempt("big", 1, 2, 503, "4")] * 4 + [_attempt("big", 2, 3, 0), _attempt("big", 5, 6, 503)]
    health = [(float(t), 20.0 + t, 200, "r", 1) for t in range(10)] + [
        (11.0, 900.0, 200, "r", 1),
        (12.0, 60e3, 0, "", None),
    ]
    samples = [(0.0, {"r": 1}, 1), (30.0, {"r": 1}, 1)]
    s = summarize(requests, attempts, health, samples)
    assert (s["short"]["requests"], s["short"]["answered"]) == (11, 10)
    assert s["short"]["p50_ms"] == pytest.approx(550.0) and s["short"]["max_ms"] == pytest.approx(1000.0)
    assert s["short"]["p95_ms"] == pytest.approx(955.0)
    assert s["short"]["statuses"] == {200: 10, 500: 1}
    big = s["big"]
    assert (big["requests"], big["answered"], big["refused_with_retry_after"], big["attempts"]) == (
        4,
        2,
        1,
        9,
    )
    assert big["attempt_statuses"] == {200: 2, 503: 6, 0: 1}
    assert (big["answer_p50_s"], big["answer_max_s"]) == (30.0, 40.0)
    assert (s["refusals_429_503"], s["refusals_with_retry_after"]) == (6, 5)  # the last 503 had none
    assert s["retry_after_values"] == {"3": 1, "4": 4, None: 1}
    assert (s["errors_5xx"], s["no_answer"], s["lost"]) == (2, 1, 2)  # the 500 and the bare 503
    assert s["mean_in_flight"] == pytest.approx(74.7 / 40, abs=0.05)  # seconds in flight over 40 s
    assert s["healthz"] == {"polls": 12, "answered": 11, "max_ms": 900.0, "p95_ms": pytest.approx(464.5)}
    assert s["replicas"]["restarts"] == 0 and s["peak_running"] == 1
    assert targets(s) == {
        "short_p95_within_1s": True,
        "zero_5xx": False,
        "zero_replica_restarts": True,
        "nothing_lost": False,
        "retry_after_on_every_refusal": False,
        "healthz_always_answered": False,
    }
    record = {
        "phases": {
            "fixed": {"summary": s, "targets": targets(s)},
            "autoscaling": {"summary": s, "targets": targets(s)},
        }
    }
    lines = summary_lines(record)
    assert "fixed" in lines[0] and "autoscaling" in lines[0]
    assert any(line.startswith("short p50/p95/max ms") and "550.0/955.0/1000.0" in line for line in lines)
    assert any(line.startswith("zero_5xx") and line.count("NOT MET") == 2 for line in lines)


def test_an_empty_phase_meets_no_latency_target():
    s = summarize([], [], [], [])
    assert s["short"]["p95_ms"] is None and s["healthz"]["max_ms"] is None
    assert targets(s)["short_p95_within_1s"] is False and targets(s)["healthz_always_answered"] is False


# -- pass tokens ------------------------------------------------------------------------------------


def test_pass_shapes_fill_each_budget_exactly():
    shapes = pass_shapes((512, 128), (2048, 512, 16384, 256))
    assert shapes == [
        (256, 128, 2),
        (512, 512, 1),
        (512, 128, 4),
        (2048, 512, 4),
        (2048, 128, 16),
        (16384, 512, 32),
        (16384, 128, 128),
    ]
    assert pass_shapes((100,), (150,)) == []  # 150 is no multiple of 100
    with pytest.raises(ValueError, match="lengths and budgets must be positive"):
        pass_shapes((0,), (512,))


def test_pass_timing_on_the_tiny_model(tiny_artifact):
    from loading.artifact import load_tokenizer
    from loading.checkpoint import load_model
    from loading.encoder import TextEncoder

    model = load_model(tiny_artifact)
    encoder = TextEncoder.from_pretrained_tokenizer(load_tokenizer(tiny_artifact))
    texts = joined_texts(random_texts(50, seed=0), count=8, chars=800)
    batch = pass_inputs(encoder, texts, 64, 4)
    assert batch["input_ids"].shape == (4, 64) and bool(batch["attention_mask"].all())  # no padding
    with pytest.raises(ValueError, match="texts must each reach 64 tokens"):
        pass_inputs(encoder, ["short", *texts], 64, 2)
    rows = measure(model, encoder, texts, (64, 16), (64, 128), repeats=2)
    assert [(r["budget_tokens"], r["tokens_per_text"], r["texts"]) for r in rows] == [
        (64, 64, 1),
        (64, 16, 4),
        (128, 64, 2),
        (128, 16, 8),
    ]
    for r in rows:
        assert 0 < r["ms_per_pass_best"] <= r["ms_per_pass"]
        assert r["tokens_per_s"] == pytest.approx(r["budget_tokens"] / r["ms_per_pass"] * 1e3, rel=0.05)
    table = pass_table(rows, (64, 16))
    assert len(table) == 4 and "L=64" in table[0] and "L=16" in table[0]
    with pytest.raises(ValueError, match="lengths must be <= the model's 128 positions"):
        measure(model, encoder, texts, (512,), (512,), repeats=1)
