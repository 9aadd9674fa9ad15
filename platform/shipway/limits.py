"""What a request may hold at any door: JSON nested at most `MAX_JSON_DEPTH` levels deep.

Every door parses JSON (the control plane's admin API, the feature service, a model server's
inference and feedback), and deep nesting is the one bound a body-size limit does not give: a
few kilobytes of `[[[[...` reach Python's recursion limit in whatever walks them (a parser, a
`repr` in an error message), which is a 500, not the caller's 400. So each door parses with
`parse_json`, or checks what its framework parsed with `check_depth`, and names the limit.
Sizes and counts are each door's own, named beside it (`MAX_ADMIN_BODY`, `MAX_ENTITIES`, ...).
Imports only the standard library: the model servers use it too.
"""

from __future__ import annotations

import json
from typing import Any

from shipway.errors import BadRequest

MAX_JSON_DEPTH = 32
"""Levels of objects and arrays a request may nest: an inference request needs 5, a lookup 3."""


class TooDeep(BadRequest):
    """JSON nested deeper than the limit (HTTP 400, naming it)."""

    def __init__(self, where: str, limit: int) -> None:
        super().__init__(
            f"{where}: JSON nested more than {limit} levels deep; at most {limit} are read"
        )


def check_depth(value: Any, where: str, limit: int = MAX_JSON_DEPTH) -> None:
    """BadRequest naming `where` when `value` nests objects or arrays deeper than `limit`
    (walked without recursion, so any depth is measured)."""
    if not isinstance(value, dict | list):
        return
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            raise TooDeep(where, limit)
        pending.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def parse_json(raw: bytes | str, where: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """`raw` parsed, or BadRequest naming `where`: not JSON, or nested deeper than `limit`."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise TooDeep(where, limit) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{where}: not JSON ({exc})") from None
    check_depth(value, where, limit)
    return value
