"""`shipway callers add|list|remove`: who may call the front door and the feature service.

A key is printed once, when it is made; the home keeps only its digest. With serving running
the control plane applies a change at once (the front door reloads, the feature service reads
the file within a second); without, the change is saved and `shipway up` starts with it. A
change the front door did not apply is an error naming why (exit 1), never "applied".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from shipway.callers import ACLS, DEFAULT_ACL
from shipway.paths import ShipwayHome

if TYPE_CHECKING:
    from shipway.callers import Caller

DEFAULT_RATE = 50
DEFAULT_BURST = 100


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    group = sub.add_parser(
        "callers", help="API keys and rate limits of the front door and the feature service"
    )
    actions = group.add_subparsers(dest="callers_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="a caller with a new key (printed once), its rate limit and its access",
        description="Makes a caller's API key and prints it once, as SHIPWAY_API_KEY=<caller>:"
        "<key>; present it as HTTP Basic credentials (curl -u <caller>:<key>). Requests over "
        "the rate get 429, and are counted per caller in Prometheus. Its access level decides "
        "what an LLM application retrieves for it; a request cannot widen it.",
    )
    add.add_argument("caller", help="its name: 1-63 of a-z, 0-9, '_', '-'")
    add.add_argument(
        "--acl",
        choices=ACLS,
        default=DEFAULT_ACL,
        help=f"what it may retrieve from an LLM application's documents ({DEFAULT_ACL}; "
        "staff also sees staff-only documents)",
    )
    add.add_argument(
        "--rate",
        type=int,
        default=DEFAULT_RATE,
        help=f"requests per second it may send ({DEFAULT_RATE})",
    )
    add.add_argument(
        "--burst",
        type=int,
        default=DEFAULT_BURST,
        help=f"requests it may send at once ({DEFAULT_BURST})",
    )
    add.add_argument(
        "--replace",
        action="store_true",
        help="give an existing caller a new key (its old key stops working) and these limits",
    )
    actions.add_parser("list", help="who may call, with their limits (never their keys)")
    remove = actions.add_parser("remove", help="revoke a caller: its key stops working")
    remove.add_argument("caller")
    group.set_defaults(run=_callers)


def _callers(args: argparse.Namespace) -> int:
    from shipway import callers
    from shipway.errors import BadRequest

    path = ShipwayHome.from_env().served.callers
    known = callers.load(path)
    if args.callers_command == "list":
        if not known:
            print("no callers yet: `shipway callers add <caller>` makes one")
        for name, caller in sorted(known.items()):
            print(f"{name:<24} rate {caller.rate}/s  burst {caller.burst}  acl {caller.acl}")
        return 0
    if args.callers_command == "remove":
        if args.caller not in known:
            raise BadRequest(f"no caller {args.caller!r}; callers: {sorted(known)}")
        _apply(path, args.caller, None)
        print(f"caller {args.caller} removed: its key no longer opens anything")
        return 0
    if args.caller in known and not args.replace:
        raise BadRequest(
            f"caller {args.caller!r} exists: --replace gives it a new key (the old one stops "
            "working)"
        )
    key = callers.new_key()
    made = callers.Caller(args.caller, callers.digest(key), args.rate, args.burst, args.acl)
    _apply(path, made.name, made)
    print(f"caller {made.name} may call at {made.rate}/s (burst {made.burst}), access {made.acl}")
    print("its key, shown this once (the home keeps only its digest):")
    print(f"{callers.KEY_ENV}={made.name}:{key}")
    print(f"e.g. curl -u {made.name}:{key} <front door>/v2/models/<model>/infer ...")
    return 0


def _apply(path: Path, name: str, caller: Caller | None) -> None:
    """Set (or, with None, remove) a caller: through the control plane when serving runs, so
    the front door applies it now; else in the file `shipway up` starts from."""
    from shipway import callers
    from shipway.errors import ServiceError, ShipwayError
    from shipway.serving.client import ServingClient

    try:
        client = ServingClient.for_home(ShipwayHome.from_env().serving)
        if caller is None:
            result = client.remove_caller(name)
        else:
            result = client.set_caller(name, caller.digest, caller.rate, caller.burst, caller.acl)
    except ServiceError as exc:
        print(f"serving is not answering ({exc}); saved for its next start in {path}")
    else:
        if not result.get("applied"):
            again = "" if caller is None else f" (then `shipway callers add {name} --replace`)"
            raise ShipwayError(
                f"caller {name}: saved in {path}, but the front door did not apply it: "
                f"{result.get('reason', 'no reason given')}; see `shipway doctor`{again}"
            )
        print("serving applied it: the front door and the feature service hold to it now")
        return

    def change(known: dict[str, Caller]) -> None:
        if caller is None:
            callers.remove(known, name)
        else:
            known[name] = caller

    callers.update(path, change)
