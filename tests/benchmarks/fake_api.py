"""A fake classifier API on a local port, and the retrying Locust users run against it.

The retry tests need answers a real replica gives only under failure (503, 429 with Retry-After,
413): a handler subclass says which, per request count; `run_retry_users` runs
`benchmarks/locust_retry.py` headless against it and returns its per-request records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT
from benchmarks.records import RecordTail

PREDICTION = {"label": "a", "score": 0.9, "probabilities": {"a": 0.9, "b": 0.1}}


class FakeAPI(BaseHTTPRequestHandler):
    """POST handler: `answer(path, body)` gives (status, body, headers); `next()` counts requests."""

    count = 0  # per subclass: each sets its own
    lock = threading.Lock()

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        raise NotImplementedError

    def next(self) -> int:
        """This request's number among the ones counted (1, 2, ...)."""
        with self.lock:
            type(self).count += 1
            return type(self).count

    @staticmethod
    def ok(body: dict) -> tuple[int, dict, dict[str, str]]:
        return 200, {"variant": "v", "predictions": [PREDICTION] * (1 if "text" in body else 2)}, {}

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        status, answer, headers = self.answer(self.path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"content-type": "application/json", "x-replica-id": "r1", **headers}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def run_retry_users(
    handler: type[FakeAPI], tmp_path: Path, variants: str, seconds: int
) -> tuple[subprocess.CompletedProcess, list[dict[str, Any]]]:
    """One retrying Locust user for `seconds` against `handler`; (the run, its request records)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    texts = tmp_path / "texts.csv"
    texts.write_text("text\nhello there\nanother text\n")
    records = tmp_path / "requests.jsonl"
    cmd = [sys.executable, "-m", "locust", "-f", "benchmarks/locust_retry.py", "--headless", "-u", "1"]
    cmd += ["-r", "1", "-t", f"{seconds}s", "--host", f"http://127.0.0.1:{server.server_port}"]
    cmd += ["--variants", variants, "--texts-file", str(texts), "--batch-share", "0"]
    cmd += ["--retry-backoff-s", "0.01", "--records", str(records), "--csv", str(tmp_path / "run")]
    cmd += ["--only-summary"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    return proc, RecordTail(records).read()
