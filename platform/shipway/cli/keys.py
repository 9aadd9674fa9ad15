"""`shipway keys generate`: a signing key for model packages."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    keys = sub.add_parser("keys", help="signing keys for model packages")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = keys_sub.add_parser(
        "generate",
        help="a new Ed25519 signing key in a file (mode 0600, outside the repository); prints "
        "the public key for $SHIPWAY_VERIFY_KEY",
    )
    generate.add_argument("--out", type=Path, required=True, help="the private key's file")

    generate.set_defaults(run=_keys)


def _keys(args: argparse.Namespace) -> int:
    from shipway.serving.package import VERIFY_KEY_ENV, generate_key, key_id, public_key_text

    public = generate_key(args.out)
    print(f"signing key {key_id(public)} written to {args.out} (mode 0600); keep it out of git")
    print(f"{VERIFY_KEY_ENV}={public_key_text(public)}")
    return 0
