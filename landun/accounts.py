"""`landun users add` and `landun tokens create`: accounts for people and machines."""

from __future__ import annotations

import argparse
import getpass
import secrets
from pathlib import Path

from api.auth import ROLES, new_token, token_hash
from domain.credentials import hash_secret
from domain.timeutil import ms_to_iso, now_ms
from landun.db import add_database_argument
from store.base import Principal
from store.factory import open_store


def _check_scope(role: str, jurisdictions: list[str]) -> None:
    if role != "admin" and not jurisdictions:
        raise SystemExit(f"a {role} needs at least one --jurisdiction (6-digit district code)")


def add_user(args: argparse.Namespace) -> int:
    _check_scope(args.role, args.jurisdiction)
    password = args.password
    generated = False
    if password is None:
        if args.generate_password:
            password, generated = secrets.token_urlsafe(12), True
        else:
            password = getpass.getpass(f"password for {args.name}: ")
    if len(password) < 8:
        raise SystemExit("the password must have at least 8 characters")
    store = open_store(Path(args.data_dir) / "landun.db", args.database)
    try:
        store.add_user(args.name, hash_secret(password), args.role, args.jurisdiction)
    finally:
        store.close()
    scope = ", ".join(args.jurisdiction) or "all jurisdictions"
    print(f"user {args.name} ({args.role}; {scope}) saved")
    if generated:
        print(f"password: {password}")
    return 0


def create_token(args: argparse.Namespace) -> int:
    _check_scope(args.role, args.jurisdiction)
    token = new_token()
    expires = now_ms() + args.days * 86_400_000 if args.days else None
    who = Principal(args.name, args.role, tuple(args.jurisdiction), kind="token")
    store = open_store(Path(args.data_dir) / "landun.db", args.database)
    try:
        store.add_token(token_hash(token), who, expires, label=args.label or "")
    finally:
        store.close()
    until = ms_to_iso(expires) if expires else "never"
    print(f"token for {args.name} ({args.role}), expires {until}. Shown once; keep it safe:")
    print(token)
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="manage people who log in").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add or replace a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--jurisdiction", action="append", default=[], help="repeatable")
    add.add_argument("--password", help="default: ask (or --generate-password)")
    add.add_argument("--generate-password", action="store_true")
    add.add_argument("--data-dir", default="var")
    add_database_argument(add)
    add.set_defaults(func=add_user)

    tokens = sub.add_parser("tokens", help="API tokens for machines").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create an API token")
    create.add_argument("--name", required=True, help="who uses it, e.g. provincial-platform")
    create.add_argument("--role", choices=ROLES, default="viewer")
    create.add_argument("--jurisdiction", action="append", default=[], help="repeatable")
    create.add_argument("--days", type=int, default=365, help="validity; 0 for no expiry")
    create.add_argument("--label", help="a note kept with the token")
    create.add_argument("--data-dir", default="var")
    add_database_argument(create)
    create.set_defaults(func=create_token)
