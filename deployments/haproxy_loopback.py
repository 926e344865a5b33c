#!/usr/bin/env python3
"""The HAProxy binary Serve starts, with its admin listeners moved to loopback.

Ray 2.60's HAProxy template binds its stats page (`*:8404`) and Prometheus endpoint (`:9101`) on
every interface, with no option to change it. Serve runs `RAY_SERVE_HAPROXY_BINARY_PATH` with
`-f <config> ...`; pointed at this file, it writes a copy of that config whose wildcard `bind`s are
127.0.0.1 and execs the real binary (`BERTSERVE_HAPROXY_BINARY`) on the copy, with the same pid,
so Serve's reloads (`-sf`) and signals work as before. Binds with an address (the API's own
`http_options.host`) are left alone. Standard library only: it runs under any `python3`.
"""

from __future__ import annotations

import os
import re
import sys

REAL_BINARY_ENV = "BERTSERVE_HAPROXY_BINARY"
WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)", re.MULTILINE)


def loopback_binds(config: str) -> str:
    """`config` with every bind on all interfaces (`*:P`, `:P`, `0.0.0.0:P`, `:::P`) on 127.0.0.1."""
    return WILDCARD_BIND.sub(r"\g<1>127.0.0.1:\g<2>", config)


def rewrite_args(argv: list[str]) -> list[str]:
    """HAProxy's arguments with the config after `-f` replaced by its loopback copy (written here)."""
    out = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "-f":
            path = argv[i + 1]
            with open(path, encoding="utf-8") as f:
                text = f.read()
            copy = f"{path}.loopback"
            with open(copy, "w", encoding="utf-8") as f:
                f.write(loopback_binds(text))
            out[i + 1] = copy
    return out


def main() -> None:
    real = os.environ.get(REAL_BINARY_ENV)
    if not real or not os.access(real, os.X_OK):
        sys.exit(f"haproxy_loopback: {REAL_BINARY_ENV}={real!r} is not an executable HAProxy binary")
    args = rewrite_args(sys.argv[1:])
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main()
