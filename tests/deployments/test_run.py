"""The HTTP ingress: HAProxy to the replicas (what `make serve` runs), its admin listeners on loopback."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from deployments.haproxy_loopback import REAL_BINARY_ENV, loopback_binds, rewrite_args
from deployments.run import INGRESS_ENV, WRAPPER, ingress_env, selected_ingress, use_ingress

TEMPLATE_LINES = """frontend prometheus
    bind :9101
listen stats
  bind *:8404
frontend http_frontend
    bind 127.0.0.1:8000
frontend other
    bind 0.0.0.0:81
    bind :::82
"""


def test_wildcard_binds_move_to_loopback_and_addressed_binds_stay():
    out = loopback_binds(TEMPLATE_LINES)
    assert "bind 127.0.0.1:9101" in out and "bind 127.0.0.1:8404" in out
    assert "bind 127.0.0.1:81" in out and "bind 127.0.0.1:82" in out
    assert "bind 127.0.0.1:8000" in out
    assert out.count("bind") == TEMPLATE_LINES.count("bind") and "*:" not in out


def test_rewrite_args_points_haproxy_at_a_loopback_copy(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(TEMPLATE_LINES)
    args = rewrite_args(["-db", "-f", str(cfg), "-sf", "123"])
    assert args[:2] == ["-db", "-f"] and args[3:] == ["-sf", "123"]
    assert Path(args[2]).read_text() == loopback_binds(TEMPLATE_LINES)
    assert cfg.read_text() == TEMPLATE_LINES  # Serve's own file is left as it wrote it


def test_the_wrapper_execs_the_real_binary_with_the_copy(tmp_path):
    """Run as Serve runs it (an executable path), with a stand-in binary that prints what it got."""
    assert os.stat(WRAPPER).st_mode & stat.S_IXUSR, "Serve needs RAY_SERVE_HAPROXY_BINARY_PATH executable"
    fake = tmp_path / "haproxy"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint(open(sys.argv[3]).read())\n")
    fake.chmod(0o755)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(TEMPLATE_LINES)
    env = {**os.environ, REAL_BINARY_ENV: str(fake)}
    out = subprocess.run([str(WRAPPER), "-db", "-f", str(cfg)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "bind 127.0.0.1:8404" in out.stdout and "*:8404" not in out.stdout


def test_the_wrapper_without_a_real_binary_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != REAL_BINARY_ENV}
    out = subprocess.run([str(WRAPPER), "-db"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and REAL_BINARY_ENV in out.stderr and "Traceback" not in out.stderr


def test_ingress_env_names_the_wrapper_and_a_real_haproxy():
    env = ingress_env("haproxy", admin_ports=(1234, 1235))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(WRAPPER)
    assert os.access(env[REAL_BINARY_ENV], os.X_OK)
    assert (env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]) == ("1234", "1235")
    assert ingress_env("proxy") == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    with pytest.raises(ValueError, match="must be one of"):
        ingress_env("nginx")


def test_use_ingress_sets_the_environment_with_own_or_default_admin_ports(monkeypatch):
    for key in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", INGRESS_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert use_ingress(own_admin_ports=False) == "haproxy"
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in os.environ  # Serve's 8404 / 9101, as `make serve`
    use_ingress("haproxy")
    stats, metrics = (
        int(os.environ[k]) for k in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
    )
    assert stats != metrics and 0 < stats < 65536 and 0 < metrics < 65536
    assert use_ingress("proxy") == "proxy" and os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_a_bad_ingress_choice_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(INGRESS_ENV, "nginx")
    with pytest.raises(SystemExit, match="BERTSERVE_INGRESS='nginx'"):
        selected_ingress()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing interface
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_suite_is_served_through_haproxy_with_its_stats_on_loopback_only(base_url):
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        pytest.skip(f"{INGRESS_ENV}=proxy: Serve's Python proxy serves this run")
    stats_port = int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"])
    r = httpx.get(f"http://127.0.0.1:{stats_port}/stats", timeout=10)
    assert r.status_code == 200 and "HAProxy" in r.text
    assert "tiny" in r.text, "HAProxy routes /tiny to the tiny app's replicas"
    address = _non_loopback_address()
    if address is not None:
        for port in (stats_port, int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"])):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{address}:{port}/", timeout=5)


@pytest.mark.parametrize(
    "raw",
    [b"GARBAGE\r\n\r\n", b"POST /tiny/classify HTTP/1.1\r\nHost: x\r\ncontent-length: -5\r\n\r\n"],
)
def test_malformed_http_is_a_400_from_the_ingress_whichever_it_is(base_url, raw):
    """HAProxy (or Serve's uvicorn proxy) answers it before any replica sees it, and closes."""
    with socket.create_connection(("127.0.0.1", urlsplit(base_url).port), timeout=30) as s:
        s.sendall(raw)
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
