"""Optional API keys: `Authorization: Bearer <key>` on every route but `/healthz`.

Keys come from the replica's environment at start-up: `API_KEYS` (comma-separated) and/or
`API_KEYS_FILE` (a file with one key per line; blank lines and `#` comments skipped). Neither set
means open access. Only SHA-256 digests of the keys are kept, and a presented key is compared with
every one of them in constant time, so neither the time taken nor a log line says anything about
the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["API_KEYS_ENV", "API_KEYS_FILE_ENV", "OPEN_ROUTES", "ApiKeys"]

API_KEYS_ENV = "API_KEYS"
API_KEYS_FILE_ENV = "API_KEYS_FILE"
OPEN_ROUTES = frozenset({"/healthz", "/pool/healthz"})  # load balancers and health checks carry no key
MIN_KEY_CHARS = 16  # a key short enough to guess is no key


def _digest(key: bytes) -> bytes:
    # Equal-length digests: compare_digest then takes the same time whatever the presented length.
    return hashlib.sha256(key).digest()


def _check_key(key: str, where: str) -> bytes:
    # Messages name the entry and its length, never the key itself: they end up in logs.
    if len(key) < MIN_KEY_CHARS or not all("!" <= ch <= "~" and ch != "," for ch in key):
        raise ValueError(
            f"{where} must be at least {MIN_KEY_CHARS} visible ASCII characters without spaces or "
            f"commas, got {len(key)} characters"
        )
    return _digest(key.encode("ascii"))


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, as SHA-256 digests; `allows` checks an `Authorization` header."""

    digests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.digests:
            raise ValueError("ApiKeys must hold at least one key digest, got none")

    @classmethod
    def from_keys(cls, keys: list[str]) -> ApiKeys:
        """Keys given directly (tests, embedding); each is checked like a configured one."""
        return cls(tuple(_check_key(k, f"key {i}") for i, k in enumerate(keys, 1)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeys | None:
        """Keys from `API_KEYS` and the file `API_KEYS_FILE` names; None when both are unset or empty.

        A named file that is missing, unreadable or holds no key raises: a typo must not open the API.
        """
        environ = os.environ if environ is None else environ
        raw = [k.strip() for k in environ.get(API_KEYS_ENV, "").split(",")]
        entries = [(f"{API_KEYS_ENV} entry {i}", k) for i, k in enumerate(raw, 1) if k]
        path = environ.get(API_KEYS_FILE_ENV, "").strip()
        if path:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{API_KEYS_FILE_ENV} must name a readable UTF-8 file, got {path}: {exc}"
                ) from exc
            in_file = [
                (f"{API_KEYS_FILE_ENV} line {n}", s)
                for n, s in enumerate((line.strip() for line in lines), 1)
                if s and not s.startswith("#")
            ]
            if not in_file:
                raise ValueError(f"{API_KEYS_FILE_ENV} must name a file holding at least one key, got {path}")
            entries += in_file
        if not entries:
            return None
        return cls(tuple(_check_key(key, where) for where, key in entries))

    def allows(self, authorization: bytes | None) -> bool:
        """True if the raw `Authorization` header value is `Bearer <one of the keys>`.

        Every configured key is compared, whether or not an earlier one matched.
        """
        scheme, _, token = (authorization or b"").strip().partition(b" ")
        presented = _digest(token.strip())
        matched = False
        for digest in self.digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched and scheme.lower() == b"bearer"
