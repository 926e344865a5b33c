"""Heavy requests beside short ones (issue 20): `python -m benchmarks.heavy_mix --json` (`make heavy-mix`).

A private Ray + Serve (127.0.0.1:8310, HAProxy ingress as `make serve`) serves the shipped `base`
application at `/base`. For `--seconds`, three clients each send the largest valid request back to
back (32 texts of ~3,000 characters of real words: Dreaddit test posts joined, each past the 512
tokens a text is cut to, so 32 x 512 = 16,384 tokens, `max_request_tokens`), retrying per
`benchmarks.retry.RetryPolicy` (a 429/503's Retry-After honoured); one client sends one short text
every 0.2 s (open loop: a slow answer does not delay the next send, and latency counts from the
scheduled send); `/base/healthz` is polled every second; Serve's replicas (id, pid, state) and the
autoscaler's target are sampled every second. Sending stops after `--seconds`; requests in flight
are then waited for (answered, refused, or lost: no answer).

Two phases, each on a freshly deployed app warmed by one big request alone: one fixed replica;
then the app's own `autoscaling_config` from `serve_config.yaml` (min 1, max 2), the same load.
Reported per phase: short requests' count and p50/p95/max; big requests answered and refused
(statuses of every attempt; Retry-After on every 429/503?); 5xx other than a 503 with Retry-After;
requests lost; replica restarts (replicas gone or with a new pid while the app kept its size;
`/base/healthz` replica ids and pids before and after); /healthz's worst latency; replicas over
time. Targets: short p95 <= 1 s, no 5xx, no restarts, every big request answered or refused with
Retry-After, every /healthz poll answered. Record: docs/benchmarks/heavy_mix.json (`--quick`: 15 s
phases, reports/heavy_mix_quick.json); `--big-clients 5` passes `max_queued_tokens` (4 x 16,384) and
draws 503s.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.load import SHORT_TEXT, random_texts, wait_serving, wait_until
from benchmarks.harness.replicas import serve_replicas
from benchmarks.harness.session import ServeSession, app_entry
from benchmarks.records import percentile
from benchmarks.retry import RETRY_AFTER_STATUSES, RetryPolicy
from deployments.serve_config import load_serve_config
from loading.host import cpu_model, machine_info

__all__ = ["RECORD", "MixConfig", "joined_texts", "main", "replica_changes", "summarize", "targets"]

logger = logging.getLogger(__name__)

RECORD = ROOT / "docs" / "benchmarks" / "heavy_mix.json"
APP = "base"  # the application (and route, /base) under test
SHORT_P95_TARGET_MS = 1000.0  # the target for short requests beside heavy ones


@dataclass(frozen=True)
class MixConfig:
    """One phase's load; the defaults are the issue's scenario."""

    seconds: float = 60.0  # sending window; requests in flight at its end are waited for
    big_clients: int = 3  # each sends the largest valid request back to back
    big_texts: int = 32  # per big request: 32 x 512 tokens = max_request_tokens (16,384)
    big_chars: int = 3000  # per big text: ~600-700 tokens of English, cut to 512 by the server
    short_every_s: float = 0.2  # one short text per this interval, open loop
    health_every_s: float = 1.0  # /healthz poll interval
    retry_attempts: int = 4  # RetryPolicy.max_attempts, the first try included
    timeout_s: float = 300.0  # per attempt: a slow answer still counts as an answer, not a loss
    drain_s: float = 600.0  # after the window: the longest to wait for requests in flight

    def __post_init__(self) -> None:
        if min(self.seconds, self.short_every_s, self.health_every_s, self.timeout_s, self.drain_s) <= 0:
            raise ValueError(f"seconds and intervals must be > 0, got {self}")
        if min(self.big_clients, self.big_texts, self.big_chars, self.retry_attempts) < 1:
            raise ValueError(f"big_clients, big_texts, big_chars, retry_attempts must be >= 1, got {self}")


def joined_texts(pool: Sequence[str], count: int, chars: int, seed: int = 0) -> list[str]:
    """`count` texts of real words, each at most `chars` characters and within the last word of it:
    texts of `pool` in a seeded random order joined by spaces (the pool repeated if it is short),
    cut at the last space before `chars`."""
    words = [t.strip() for t in pool if t.strip()]
    if not words or count < 1 or chars < 1:
        raise ValueError(f"pool must hold a non-blank text and count, chars be >= 1, got {count}, {chars}")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts, size = [], 0
        while size <= chars:
            part = " ".join(words[rng.randrange(len(words))].split())  # one line, single spaces
            parts.append(part)
            size += len(part) + 1
        text = " ".join(parts)[: chars + 1]
        out.append(text[: text.rfind(" ")] if " " in text else text[:chars])
    return out


# -- what a phase records ---------------------------------------------------------------------------
# attempt: {"kind", "t0", "t1", "status" (0: no answer), "retry_after" (header or None), "replica"}
# request: {"kind", "t0", "t1", "attempts", "first_status", "status", "retry_after"}
# health:  (epoch, latency ms, status, replica id, pid)
# sample:  (epoch, {replica id: pid} of RUNNING replicas, autoscaler's target)


def replica_changes(samples: list[tuple[float, dict[str, int], int]]) -> dict[str, Any]:
    """Replicas started and gone over `samples`, and restarts: a replica with a new pid, or gone
    while the autoscaler's target did not drop below the running count (not a downscale)."""
    if not samples:
        return {"before": {}, "after": {}, "started": [], "gone": [], "pid_changed": [], "restarts": 0}
    seen: dict[str, int] = dict(samples[0][1])  # replica id -> its first pid
    pid_changed, gone, unplanned = set(), [], 0
    for (_, prev, prev_target), (_, now, target) in zip(samples, samples[1:], strict=False):
        for rid, pid in now.items():
            if seen.setdefault(rid, pid) != pid:
                pid_changed.add(rid)
        for rid in prev.keys() - now.keys():
            gone.append(rid)
            unplanned += min(prev_target, target) >= len(prev)  # the app was not scaling down
    return {
        "before": samples[0][1],
        "after": samples[-1][1],
        "started": sorted(seen.keys() - samples[0][1].keys()),
        "gone": sorted(gone),
        "pid_changed": sorted(pid_changed),
        "restarts": unplanned + len(pid_changed),
    }


def _pct(values: list[float], q: float) -> float | None:
    p = percentile(values, q)
    return None if p is None else round(p, 1)


def summarize(
    requests: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    health: list[tuple[float, float, int, str, int | None]],
    samples: list[tuple[float, dict[str, int], int]],
) -> dict[str, Any]:
    """One phase's figures: short latency, big outcomes, statuses, losses, /healthz, replicas."""
    short = [r for r in requests if r["kind"] == "short"]
    big = [r for r in requests if r["kind"] == "big"]
    short_ms = [(r["t1"] - r["t0"]) * 1e3 for r in short if r["status"] == 200]
    big_s = [r["t1"] - r["t0"] for r in big if r["status"] == 200]
    refusals = [a for a in attempts if a["status"] in RETRY_AFTER_STATUSES]

    def refused_politely(r: dict[str, Any]) -> bool:
        return r["status"] in RETRY_AFTER_STATUSES and r["retry_after"] is not None

    other_5xx = [a for a in attempts if a["status"] >= 500 and not refused_politely(a)]
    lost = [r for r in requests if r["status"] != 200 and not refused_politely(r)]
    health_ms = [ms for _, ms, status, _, _ in health if status == 200]
    span_s = max((r["t1"] for r in requests), default=0.0) - min((r["t0"] for r in requests), default=0.0)
    return {
        "short": {
            "requests": len(short),
            "answered": len(short_ms),
            "p50_ms": _pct(short_ms, 50),
            "p95_ms": _pct(short_ms, 95),
            "max_ms": round(max(short_ms), 1) if short_ms else None,
            "statuses": dict(Counter(r["status"] for r in short)),
        },
        "big": {
            "requests": len(big),
            "answered": len(big_s),
            "refused_with_retry_after": sum(map(refused_politely, big)),
            "attempts": sum(1 for a in attempts if a["kind"] == "big"),
            "attempt_statuses": dict(Counter(a["status"] for a in attempts if a["kind"] == "big")),
            "answer_p50_s": _pct(big_s, 50),
            "answer_max_s": round(max(big_s), 1) if big_s else None,
        },
        "attempt_statuses": dict(Counter(a["status"] for a in attempts)),
        "refusals_429_503": len(refusals),
        "refusals_with_retry_after": sum(a["retry_after"] is not None for a in refusals),
        "retry_after_values": dict(Counter(a["retry_after"] for a in refusals)),
        "errors_5xx": len(other_5xx),  # a 503 with Retry-After is a refusal, counted above
        "no_answer": sum(1 for a in attempts if a["status"] == 0),
        "lost": len(lost),
        "lost_examples": lost[:5],
        # requests in flight on average (Little's law): what the autoscaler compares with its target
        "mean_in_flight": round(sum(r["t1"] - r["t0"] for r in requests) / span_s, 1) if span_s > 0 else 0.0,
        "healthz": {
            "polls": len(health),
            "answered": len(health_ms),
            "max_ms": round(max(health_ms), 1) if health_ms else None,
            "p95_ms": _pct(health_ms, 95),
        },
        "replicas": replica_changes(samples),
        "peak_running": max((len(s[1]) for s in samples), default=0),
    }


def targets(summary: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, each True when met."""
    short, health = summary["short"], summary["healthz"]
    return {
        "short_p95_within_1s": short["p95_ms"] is not None and short["p95_ms"] <= SHORT_P95_TARGET_MS,
        "zero_5xx": summary["errors_5xx"] == 0,
        "zero_replica_restarts": summary["replicas"]["restarts"] == 0,
        "nothing_lost": summary["lost"] == 0,
        "retry_after_on_every_refusal": summary["refusals_with_retry_after"] == summary["refusals_429_503"],
        "healthz_always_answered": health["polls"] > 0 and health["answered"] == health["polls"],
    }


# -- running a phase ---------------------------------------------------------------------------------


class _Phase:
    """The clients, the /healthz poller and the replica sampler of one phase, on threads."""

    def __init__(self, session: ServeSession, cfg: MixConfig, big_sets: list[list[str]]) -> None:
        self.session, self.cfg, self.big_sets = session, cfg, big_sets
        self.url = f"{session.url}/{APP}"
        self.policy = RetryPolicy(max_attempts=cfg.retry_attempts, timeout_s=cfg.timeout_s)
        self.requests: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.health: list[tuple[float, float, int, str, int | None]] = []
        self.samples: list[tuple[float, dict[str, int], int]] = []
        self.states: list[dict[str, int]] = []  # replicas per state, at each sample
        self.stop = threading.Event()  # no new requests
        self.done = threading.Event()  # requests drained: poller and sampler stop too
        self.lock = threading.Lock()
        self.short_sent = 0  # scheduled; each must end as a record (a pool job's error would hide it)

    def _request(self, client: httpx.Client, kind: str, body: dict[str, Any], t0: float) -> dict[str, Any]:
        """One request through the retry policy, each attempt recorded; its record."""

        def attempt() -> tuple[int | None, str | None, Any]:
            started = time.time()
            try:
                r = client.post(f"{self.url}/classify", json=body, timeout=self.cfg.timeout_s)
            except httpx.HTTPError as exc:
                r, problem = None, f"no answer: {type(exc).__name__}"
            else:
                problem = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
            row = {
                "kind": kind,
                "t0": started,
                "t1": time.time(),
                "status": r.status_code if r is not None else 0,
                "retry_after": r.headers.get("retry-after") if r is not None else None,
                "replica": r.headers.get("x-replica-id") if r is not None else None,
                "error": problem,
            }
            with self.lock:
                self.attempts.append(row)
            return (r.status_code if r is not None else None), problem, r

        made, first, (status, _, response) = self.policy.run(attempt)
        record = {"kind": kind, "t0": t0, "t1": time.time(), "attempts": made}
        record |= {"first_status": first[0] or 0, "status": status or 0}
        record["retry_after"] = response.headers.get("retry-after") if response is not None else None
        with self.lock:
            self.requests.append(record)
        return record

    def _big_client(self, index: int) -> None:
        with httpx.Client() as client:
            k = index
            while not self.stop.is_set():
                texts = self.big_sets[k % len(self.big_sets)]
                record = self._request(client, "big", {"texts": texts}, time.time())
                k += self.cfg.big_clients  # this client's own sets, in turn
                if record["status"] != 200:  # failed for good: a polite client waits before its next
                    self.stop.wait(self.policy.delay_s(self.policy.max_attempts, None, record["retry_after"]))

    def _short_client(self) -> None:
        with (
            httpx.Client(limits=httpx.Limits(max_connections=200)) as client,
            ThreadPoolExecutor(200) as pool,
        ):
            next_at = time.time()
            while not self.stop.is_set():
                pool.submit(self._request, client, "short", {"text": SHORT_TEXT}, next_at)
                self.short_sent += 1
                next_at += self.cfg.short_every_s
                self.stop.wait(max(0.0, next_at - time.time()))

    def _poll_health(self) -> None:
        with httpx.Client() as client:
            while not self.done.is_set():
                started = time.time()
                try:
                    r = client.get(f"{self.url}/healthz", timeout=60)
                    body = r.json() if r.status_code == 200 else {}
                    status = r.status_code
                except (httpx.HTTPError, ValueError):
                    body, status = {}, 0
                row = (
                    started,
                    (time.time() - started) * 1e3,
                    status,
                    body.get("replica_id", ""),
                    body.get("pid"),
                )
                self.health.append(row)
                self.done.wait(max(0.0, started + self.cfg.health_every_s - time.time()))

    def _sample_replicas(self) -> None:
        while not self.done.is_set():
            deployment = _deployment_details(self.session)
            running = {r["replica_id"]: r["pid"] for r in deployment["replicas"] if r["state"] == "RUNNING"}
            self.samples.append((time.time(), running, deployment["target_num_replicas"]))
            self.states.append(dict(Counter(r["state"] for r in deployment["replicas"])))
            self.done.wait(1.0)

    def run(self) -> tuple[float, float]:
        """Send for `seconds`, then wait for what is in flight; (start, end of sending), epoch s."""
        watchers = [
            threading.Thread(target=f, daemon=True) for f in (self._poll_health, self._sample_replicas)
        ]
        clients = [
            threading.Thread(target=self._big_client, args=(i,), daemon=True)
            for i in range(self.cfg.big_clients)
        ]
        clients.append(threading.Thread(target=self._short_client, daemon=True))
        for t in watchers + clients:
            t.start()
        start = time.time()
        self.stop.wait(self.cfg.seconds)
        self.stop.set()
        end = time.time()
        deadline = time.monotonic() + self.cfg.drain_s
        for t in clients:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if alive := sum(t.is_alive() for t in clients):
            logger.warning("%d clients still waiting for answers after %.0f s", alive, self.cfg.drain_s)
        self.done.set()
        for t in watchers:
            t.join(timeout=30)
        return start, end


def _deployment_details(session: ServeSession) -> dict[str, Any]:
    """The app's one deployment as the controller details it: replicas (every state), target."""
    apps = session.client.get_serve_details().get("applications", {})
    deployments = (apps.get(APP) or {}).get("deployments") or {}
    return next(iter(deployments.values()), {"replicas": [], "target_num_replicas": 0})


def _settled(session: ServeSession, replicas: int) -> bool:
    """The app runs exactly `replicas` replicas, none starting or stopping."""
    found = _deployment_details(session)["replicas"]
    return len(found) == replicas and all(r["state"] == "RUNNING" for r in found)


def _healthz_replicas(url: str, tries: int = 10) -> dict[str, int]:
    """replica id -> pid as `/base/healthz` reports them (a few polls: the router spreads them)."""
    found = {}
    with httpx.Client() as client:
        for _ in range(tries):
            try:
                body = client.get(f"{url}/{APP}/healthz", timeout=30).json()
            except (httpx.HTTPError, ValueError):
                continue
            found[body.get("replica_id", "")] = body.get("pid")
    return found


def run_phase(
    session: ServeSession, app: dict[str, Any], cfg: MixConfig, big_sets: list[list[str]]
) -> dict[str, Any]:
    """Deploy `app` afresh, wait until it serves at its minimum size, send one big request alone
    (warm-up: the replica's first passes), run the mix; the phase's record."""
    deployment = app["deployments"][0]
    low = deployment.get("autoscaling_config", {}).get("min_replicas") or deployment.get("num_replicas", 1)
    # A fresh application: an update from the other phase's settings replaces the replica anyway,
    # and the old one drains for up to 35 s (Serve's ingress drain) while the new one serves.
    session.client.delete_apps([APP], blocking=True)
    session.deploy([app])
    wait_until(lambda: _settled(session, low), 300, f"{APP} running at {low} replicas", 0.5)
    wait_serving(session.url, APP, 300)
    with httpx.Client() as client:
        started = time.perf_counter()
        warm = client.post(
            f"{session.url}/{APP}/classify", json={"texts": big_sets[0]}, timeout=cfg.timeout_s
        )
        warmup = {"status": warm.status_code, "seconds": round(time.perf_counter() - started, 2)}
    before = {"healthz": _healthz_replicas(session.url), "serve": serve_replicas(session.client, APP)}
    load_before = machine_info()["load_avg_1_5_15m"]
    phase = _Phase(session, cfg, big_sets)
    start, end = phase.run()
    after = {"healthz": _healthz_replicas(session.url), "serve": serve_replicas(session.client, APP)}
    summary = summarize(phase.requests, phase.attempts, phase.health, phase.samples)
    if summary["short"]["requests"] != phase.short_sent:
        logger.warning("%d short requests sent, %d recorded", phase.short_sent, summary["short"]["requests"])
    autoscaling = _deployment_details(session).get("autoscaling_detail") or {}
    return {
        "warmup_big_request": warmup,
        "deployment": {
            k: deployment.get(k) for k in ("num_replicas", "autoscaling_config", "max_queued_requests")
        },
        "args": {k: v for k, v in app["args"].items() if k.startswith("max_")},
        "sending_s": round(end - start, 1),
        "short_sent": phase.short_sent,
        "load_avg_1_5_15m_before": load_before,
        "load_avg_1_5_15m_after": machine_info()["load_avg_1_5_15m"],
        "summary": summary,
        "targets": targets(summary),
        "replicas_before": before,
        "replicas_after": after,
        "autoscaling_decisions": autoscaling.get("decisions", []),
        "replicas_over_time": [
            [round(t - start, 1), sorted(ids), target, states]
            for (t, ids, target), states in zip(phase.samples, phase.states, strict=True)
        ],
        "healthz_ms": [[round(t - start, 1), round(ms), status] for t, ms, status, _, _ in phase.health],
        "big_requests": [_relative(r, start) for r in phase.requests if r["kind"] == "big"],
        "short_ms": [
            [round(r["t0"] - start, 1), round((r["t1"] - r["t0"]) * 1e3), r["status"]]
            for r in sorted((r for r in phase.requests if r["kind"] == "short"), key=lambda r: r["t0"])
        ],
    }


def _relative(record: dict[str, Any], start: float) -> dict[str, Any]:
    return {**record, "t0": round(record["t0"] - start, 2), "t1": round(record["t1"] - start, 2)}


def big_request_texts(cfg: MixConfig, sets: int, seed: int) -> tuple[list[list[str]], dict[str, Any]]:
    """`sets` distinct largest requests, and how the default model's tokenizer counts them."""
    from loading.artifact import load_tokenizer
    from loading.encoder import TextEncoder

    pool = random_texts(400, seed)
    big_sets = [joined_texts(pool, cfg.big_texts, cfg.big_chars, seed + k) for k in range(sets)]
    encoder = TextEncoder.from_pretrained_tokenizer(load_tokenizer(ROOT / "artifacts" / "base"))
    full = [len(e.ids) for e in encoder.encode(big_sets[0], 100_000)[0]]
    cut = [len(e.ids) for e in encoder.encode(big_sets[0], 512)[0]]
    return big_sets, {
        "texts": cfg.big_texts,
        "chars_per_text": [min(len(t) for t in big_sets[0]), max(len(t) for t in big_sets[0])],
        "tokens_per_text_uncut": [min(full), max(full)],
        "tokens_after_cut": sum(cut),
        "body_bytes": len(json.dumps({"texts": big_sets[0]}).encode()),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The headline of both phases side by side."""
    phases = result["phases"]
    names = list(phases)
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("short requests (answered)", lambda s: f"{s['short']['requests']} ({s['short']['answered']})"),
        (
            "short p50/p95/max ms",
            lambda s: f"{s['short']['p50_ms']}/{s['short']['p95_ms']}/{s['short']['max_ms']}",
        ),
        ("big requests answered", lambda s: f"{s['big']['answered']}/{s['big']['requests']}"),
        ("big refused w/ Retry-After", lambda s: s["big"]["refused_with_retry_after"]),
        ("big attempt statuses", lambda s: s["big"]["attempt_statuses"]),
        (
            "429/503 (with Retry-After)",
            lambda s: f"{s['refusals_429_503']} ({s['refusals_with_retry_after']})",
        ),
        ("other 5xx", lambda s: s["errors_5xx"]),
        ("lost (no answer etc.)", lambda s: s["lost"]),
        ("replica restarts", lambda s: s["replicas"]["restarts"]),
        ("replicas started/gone", lambda s: f"{len(s['replicas']['started'])}/{len(s['replicas']['gone'])}"),
        ("peak running replicas", lambda s: s["peak_running"]),
        ("requests in flight (mean)", lambda s: s["mean_in_flight"]),
        (
            "/healthz answered, max ms",
            lambda s: f"{s['healthz']['answered']}/{s['healthz']['polls']}, {s['healthz']['max_ms']}",
        ),
    ]
    lines = [f"{'':28}" + "".join(f"{n:>24}" for n in names)]
    for label, cell in rows:
        lines.append(f"{label:28}" + "".join(f"{str(cell(phases[n]['summary'])):>24}" for n in names))
    for target in phases[names[0]]["targets"]:
        marks = ["met" if phases[n]["targets"][target] else "NOT MET" for n in names]
        lines.append(f"{target:28}" + "".join(f"{m:>24}" for m in marks))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__, serve_port=8310)
    p.add_argument("--seconds", type=float, default=MixConfig.seconds, help="sending window per phase")
    p.add_argument("--big-clients", type=positive_int, default=MixConfig.big_clients)
    p.add_argument(
        "--big-chars", type=positive_int, default=MixConfig.big_chars, help="characters per big text"
    )
    p.add_argument("--phases", default="fixed,autoscaling", help="fixed (1 replica), autoscaling, or both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help=f"default {RECORD.relative_to(ROOT)}")
    p.add_argument("--quick", action="store_true", help="15 s per phase")
    args = p.parse_args(argv)
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if not phases or set(phases) - {"fixed", "autoscaling"}:
        p.error(f"--phases must be fixed, autoscaling or both, got {args.phases!r}")
    cfg = MixConfig(
        seconds=15.0 if args.quick else args.seconds, big_clients=args.big_clients, big_chars=args.big_chars
    )
    out = args.out or (ROOT / "reports" / "heavy_mix_quick.json" if args.quick else RECORD)
    setup_logging()
    command = " ".join(["python -m benchmarks.heavy_mix", *(sys.argv[1:] if argv is None else argv)])
    config = load_serve_config(args.config)
    big_sets, big_request = big_request_texts(cfg, 2 * cfg.big_clients, args.seed)
    cpu = cpu_model()
    result: dict[str, Any] = {"command": command, "machine": machine_info(), "cpu": cpu}
    result |= {"avx512_vnni": "avx512_vnni" in cpu, "config": asdict(cfg), "big_request": big_request}
    result["phases"] = {}
    with ServeSession(config, args.port) as session:
        for name in phases:
            app = app_entry(config, APP, replicas=1 if name == "fixed" else None)
            logger.info("phase %s: %s", name, app["deployments"][0])
            result["phases"][name] = run_phase(session, app, cfg, big_sets)
    result["machine_after"] = machine_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    logger.info("wrote %s", out)
    emit(result, args.json, summary_lines(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
