"""Headless Locust as a subprocess: one command line for every load-test script, and a clean stop.

Locust runs in its own process (gevent must not patch the measuring script), sending single texts
(`--batch-share 0`, so requests/s = texts/s) from `loadtest/locustfile.py` or its retrying users.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence

from loadtest.serving import ROOT

__all__ = ["locust_command", "stop_locust"]


def locust_command(
    url: str,
    variant: str,
    users: int,
    seconds: float,
    *,
    locustfile: str = "locustfile.py",
    options: Sequence[str] = (),
) -> list[str]:
    """`users` closed-loop users, all started at once, posting single texts to `variant` for `seconds`."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds:.0f}s",
        "--host",
        url,
        "--variants",
        variant,
        "--batch-share",
        "0",
        "--only-summary",
        "--loglevel",
        "WARNING",
        *options,
    ]


def stop_locust(proc: subprocess.Popen) -> None:
    """SIGTERM (Locust stops its users and exits), SIGKILL if it does not within 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
