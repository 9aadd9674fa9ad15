"""Who may call the models: per-caller API keys, hashed at rest, and each caller's rate limit.

A caller presents its key as HTTP Basic credentials, `<caller>:<key>` (`curl -u`), to the front
door (Envoy's basic-auth filter checks it, and Envoy's local rate limit holds the caller to
its rate) and to the feature service (which checks the same store, and hands the same
credentials on to the front door when it scores). A key is shown once, when it is made;
what is kept (`ServingHome.callers`, owner-only) is its SHA-1 in htpasswd's `{SHA}` form, the
one hash Envoy's filter reads: a key is 256 random bits, so its hash gives nothing away.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shipway.errors import BadRequest, NotFound
from shipway.files import locked, write_atomic
from shipway.processes import flag

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY_ENV = "SHIPWAY_API_KEY"
"""Where a client of the front door finds its `<caller>:<key>`."""
REQUIRE_ENV = "SHIPWAY_REQUIRE_API_KEYS"
"""`no` opens the front door and the feature service to anyone (a lab, a benchmark); default yes."""


@dataclass(frozen=True)
class Caller:
    name: str
    digest: str
    """The key's `{SHA}` digest (htpasswd)."""
    rate: int
    """Requests per second it may send (the bucket refills at this rate)."""
    burst: int
    """Requests it may send at once (the bucket's size)."""

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise BadRequest(
                f"caller name {self.name!r}: use 1-63 of a-z, 0-9, '_' and '-', starting with a "
                "letter or digit"
            )
        if not self.digest.startswith("{SHA}") or len(self.digest) != 33:
            raise BadRequest(f"caller {self.name}: the key's digest must be {{SHA}} + 28 chars")
        for field, value in (("rate", self.rate), ("burst", self.burst)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(
                    f"caller {self.name}: {field} must be a whole number >= 1, not {value!r}"
                )


def new_key() -> str:
    return secrets.token_urlsafe(32)


def digest(key: str) -> str:
    """htpasswd's `{SHA}` form of a key."""
    return "{SHA}" + base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()


def credentials(caller: str, key: str) -> str:
    """The `Authorization` header value of a caller."""
    return "Basic " + base64.b64encode(f"{caller}:{key}".encode()).decode()


def load(path: Path) -> dict[str, Caller]:
    if not path.exists():
        return {}
    try:
        return {c["name"]: Caller(**c) for c in json.loads(path.read_text())["callers"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"callers file {path} is unreadable ({exc!r}); move it away") from None


def _save(path: Path, callers: dict[str, Caller]) -> None:
    document = {"callers": [asdict(c) for _, c in sorted(callers.items())]}
    write_atomic(path, json.dumps(document, indent=1), mode=0o600)


def update(path: Path, change: Callable[[dict[str, Caller]], None]) -> dict[str, Caller]:
    """Apply `change` to the callers file under its lock (the control plane, `shipway up` and
    `shipway callers` may write it at once; none loses the other's caller); the result."""
    with locked(path.with_name(f".{path.name}.lock")):
        known = load(path)
        change(known)
        _save(path, known)
        return known


def remove(known: dict[str, Caller], name: str) -> None:
    """Take `name` out of `known` (for `update`); NotFound names who there is."""
    if name not in known:
        raise NotFound(f"no caller {name!r}; callers: {sorted(known)}")
    del known[name]


def identify(callers: dict[str, Caller], authorization: str | None) -> Caller | None:
    """The caller whose key an `Authorization: Basic ...` header holds, or None."""
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        name, _, key = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    caller = callers.get(name)
    if caller is None or not hmac.compare_digest(caller.digest, digest(key)):
        return None
    return caller


def required() -> bool:
    """Whether callers must present a key (`SHIPWAY_REQUIRE_API_KEYS`, default yes)."""
    return flag(REQUIRE_ENV, default=True)


class Buckets:
    """One token bucket per caller, as Envoy's local rate limit keeps them: a caller may send
    `burst` requests at once and `rate` a second after that. Not thread-safe: one event loop."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[float, float, Caller]] = {}

    def take(self, caller: Caller, now: float | None = None) -> bool:
        """Whether `caller` may send one more request now (and, if so, count it)."""
        now = time.monotonic() if now is None else now
        tokens, last, known = self._tokens.get(caller.name, (float(caller.burst), now, caller))
        if known != caller:  # a changed rate or key starts a full bucket
            tokens, last = float(caller.burst), now
        tokens = min(float(caller.burst), tokens + (now - last) * caller.rate)
        allowed = tokens >= 1.0
        self._tokens[caller.name] = (tokens - 1.0 if allowed else tokens, now, caller)
        return allowed
