"""Who may call the models: per-caller API keys, hashed at rest, and each caller's rate limit.

A caller presents its key as HTTP Basic credentials, `<caller>:<key>` (`curl -u`), to the front
door (Envoy's basic-auth filter checks it, and Envoy's local rate limit holds the caller to
its rate) and to the feature service (which checks the same store, and hands the same
credentials on to the front door when it scores). A key is shown once, when it is made;
what is kept (`ServingHome.callers`, owner-only) is its SHA-1 in htpasswd's `{SHA}` form, the
one hash Envoy's filter reads: a key is 256 random bits, so its hash gives nothing away.

A caller's rights are part of its record, never of its requests: `acl` is what an LLM
application may retrieve for it (`public`, or `staff`, which sees staff-only documents too).
Envoy names the caller it authenticated to the model servers in a header it sets itself
(`shipway.serving.protocol.CALLER_HEADER`), and the application reads the rights of that name
from the record (the control plane's projection of it, `access_map`); a request may narrow its
access (`narrowest`), never widen it.

Names and digests are checked where a record is made and where one is read: a name is
`[a-z0-9][a-z0-9_-]{0,62}` and nothing else (no trailing newline), a digest exactly `{SHA}`
and 28 base64 characters, since both are lines of the users list Envoy reads, and one bad line
makes Envoy reject the whole list.
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

from shipway.errors import BadRequest, Forbidden, NotFound, shown
from shipway.files import locked, write_atomic
from shipway.processes import flag

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""What a caller's name must match whole (`fullmatch`: `$` would let a trailing newline in)."""
DIGEST = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
"""htpasswd's `{SHA}` form: a SHA-1 (20 bytes) is 28 base64 characters, the last a pad."""
ACLS = ("public", "staff")
"""A caller's access levels, narrowest first: `staff` sees what `public` does, and more."""
DEFAULT_ACL = "public"
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
    acl: str = DEFAULT_ACL
    """What it may retrieve from an LLM application's corpus: one of `ACLS`."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise BadRequest(
                f"caller name {shown(self.name)}: use 1-63 of a-z, 0-9, '_' and '-', starting "
                "with a letter or digit, and nothing else"
            )
        if not isinstance(self.digest, str) or not DIGEST.fullmatch(self.digest):
            raise BadRequest(
                f"caller {self.name}: digest {shown(self.digest)} is not {{SHA}} followed by "
                "exactly 28 base64 characters (htpasswd's SHA-1 form)"
            )
        for field, value in (("rate", self.rate), ("burst", self.burst)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(
                    f"caller {self.name}: {field} must be a whole number >= 1, not {value!r}"
                )
        if self.acl not in ACLS:
            raise BadRequest(
                f"caller {self.name}: acl {shown(self.acl)} is not one of {list(ACLS)}"
            )


def access_map(known: dict[str, Caller]) -> dict[str, str]:
    """Each caller's access level, and nothing else of its record: what the model servers
    read (`ServingHome.access`), so they never hold a key's digest."""
    return {name: caller.acl for name, caller in sorted(known.items())}


def narrowest(allowed: str, asked: str | None) -> str:
    """The access a request gets: what its caller's record allows, or the narrower level the
    request asks for; asking for more is Forbidden, naming both."""
    if asked is None or asked == allowed:
        return allowed
    if asked not in ACLS:
        raise BadRequest(f"parameters.acl: {shown(asked)} is not one of {list(ACLS)}")
    if ACLS.index(asked) > ACLS.index(allowed):
        raise Forbidden(
            f"parameters.acl: {asked!r} would widen this caller's access ({allowed!r}, from its "
            "record); a request may only narrow it"
        )
    return asked


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
    except (ValueError, KeyError, TypeError, OSError, BadRequest) as exc:
        raise BadRequest(f"callers file {path} is unreadable ({exc}); move it away") from None


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
