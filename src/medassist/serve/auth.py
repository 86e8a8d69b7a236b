"""Who may call the service: API keys, their roles, and a per-key rate limit, checked before a request is read.

A key file holds one key per line, ``NAME ROLE sha256:HEX``: the key's name (what the access log shows), its role
and the SHA-256 of the key. The key itself is printed once by ``medassist serve keys add`` and stored nowhere; keys
are 256-bit random tokens, so an unsalted hash cannot be reversed by guessing. Lines starting with ``#`` and blank
lines are skipped; any other line that does not parse stops the service at start, naming the file and the line.

Roles: ``client`` may predict and list models; ``metrics`` may read ``/metrics`` only; ``admin`` may do both and
reload bundles. A request sends its key as ``Authorization: Bearer <key>``; it is hashed and compared with every
stored hash in constant time (:func:`hmac.compare_digest`, no early exit), so the answer's timing tells nothing
about which key or how much of one matched.

:class:`Gate` is pure ASGI middleware: a request without a valid key for its route is answered 401 (403 for a key
of the wrong role, 429 over the rate limit) before its body is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medassist.errors import MedAssistError

ROLES = ("client", "metrics", "admin")
KEY_PREFIX = "mdk_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
OPEN_PATHS = ("/", "/healthz", "/readyz")  # the page asks for the key itself; load balancers probe health
OPEN_PREFIXES = ("/static/",)


@dataclass(frozen=True)
class ApiKey:
    """One stored key: its name, role and the SHA-256 of the key (bytes)."""

    name: str
    role: str
    digest: bytes


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _bad_line(path: Path, number: int, why: str) -> MedAssistError:
    return MedAssistError(
        f"{path}, line {number}: {why}; each line is NAME ROLE sha256:HEX (ROLE one of {', '.join(ROLES)}), written "
        "by `medassist serve keys add NAME --api-keys FILE`"
    )


def read_keys(path: str | os.PathLike[str]) -> list[ApiKey]:
    """The keys of a key file; a line that does not parse is refused with its number (never its content, which
    could be a pasted key)."""
    path = Path(path)
    if not path.is_file():
        raise MedAssistError(
            f"API key file {path} does not exist; create it with `medassist serve keys add NAME --api-keys {path}`"
        )
    keys: list[ApiKey] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise _bad_line(path, number, f"has {len(parts)} fields, not 3")
        name, role, hashed = parts
        if not NAME_PATTERN.match(name):
            raise _bad_line(path, number, "has a name that is not 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise _bad_line(path, number, "has an unknown role")
        if not HASH_PATTERN.match(hashed):
            raise _bad_line(path, number, "has no sha256:HEX hash (64 lower-case hex digits)")
        if any(k.name == name for k in keys):
            raise _bad_line(path, number, f"repeats the name {name!r}")
        keys.append(ApiKey(name, role, bytes.fromhex(hashed.split(":", 1)[1])))
    if not keys:
        raise MedAssistError(
            f"API key file {path} holds no key; add one with `medassist serve keys add NAME --api-keys {path}`"
        )
    return keys


def add_key(path: str | os.PathLike[str], name: str, role: str = "client") -> str:
    """Make a new key, append its name, role and hash to the key file (created readable by its owner only) and
    return the key, which is stored nowhere else."""
    path = Path(path)
    if not NAME_PATTERN.match(name):
        raise MedAssistError(f"key name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise MedAssistError(f"unknown role {role!r}; give one of {', '.join(ROLES)}")
    if path.exists() and any(k.name == name for k in read_keys(path)):
        raise MedAssistError(f"{path} already has a key named {name!r}; choose another name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{name} {role} sha256:{digest(key).hex()}\n")
    return key


class KeyRing:
    """The known keys; :meth:`find` checks a presented key against all of them in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = list(keys)

    def find(self, presented: str) -> ApiKey | None:
        d = digest(presented)
        found = None
        for key in self.keys:  # every key compared, whatever matched
            if hmac.compare_digest(d, key.digest):
                found = key
        return found


class RateLimit:
    """A token bucket per caller: ``per_second`` requests a second, bursts of up to one second's worth."""

    def __init__(self, per_second: float) -> None:
        self.rate = float(per_second)
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, caller: str) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(caller, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[caller] = (tokens, now)
            return False
        self.buckets[caller] = (tokens - 1.0, now)
        return True


def required_role(path: str, *, metrics_public: bool) -> tuple[str, ...] | None:
    """The roles that may call ``path``, or None when it is open."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    if path == "/metrics":
        return None if metrics_public else ("metrics", "admin")
    if path.startswith("/v1/admin/"):
        return ("admin",)
    return ("client", "admin")


class Gate:
    """Pure ASGI middleware: the key check (when ``ring`` is given) and the rate limit, before the body is read.
    The key's name goes to ``scope["state"]["key_name"]`` for the access log."""

    def __init__(self, app: Any, *, ring: KeyRing | None, rate_limit: float = 0.0, metrics_public: bool = False):
        self.app, self.ring, self.metrics_public = app, ring, metrics_public
        self.limit = RateLimit(rate_limit) if rate_limit > 0 else None

    async def _refuse(self, scope: dict[str, Any], send: Any, status: int, message: str, extra=()) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = json.dumps({"detail": message, "request_id": request_id}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        roles = required_role(scope.get("path", ""), metrics_public=self.metrics_public)
        if roles is None:
            await self.app(scope, receive, send)
            return
        caller = "client " + str((scope.get("client") or ("unknown",))[0])  # without keys: per address
        if self.ring is not None:
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            key = self.ring.find(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if key is None:
                why = "a wrong API key" if header else "no API key"
                await self._refuse(
                    scope,
                    send,
                    401,
                    f"{why}: send Authorization: Bearer <key> (keys come from `medassist serve keys add`)",
                    [(b"www-authenticate", b'Bearer realm="medassist"')],
                )
                return
            scope.setdefault("state", {})["key_name"] = caller = key.name
            if key.role not in roles:
                await self._refuse(
                    scope,
                    send,
                    403,
                    f"the key {key.name!r} has the role {key.role!r}; this route needs {' or '.join(roles)}",
                )
                return
        if self.limit is not None and not self.limit.allow(caller):
            await self._refuse(
                scope,
                send,
                429,
                f"more than {self.limit.rate:g} requests a second from this caller; slow down",
                [(b"retry-after", b"1")],
            )
            return
        await self.app(scope, receive, send)
