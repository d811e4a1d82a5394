"""`landun users add/list/disable/enable/delete` and `landun tokens create/list/revoke`:
accounts for people and machines."""

from __future__ import annotations

import argparse
import getpass
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from api.auth import ROLES, new_token, token_hash
from domain.credentials import hash_secret
from domain.timeutil import ms_to_iso, now_ms
from landun.db import add_database_argument
from store.base import Principal, Store
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
    with _store(args) as store:
        store.add_user(args.name, hash_secret(password), args.role, args.jurisdiction)
    scope = ", ".join(args.jurisdiction) or "all jurisdictions"
    print(f"user {args.name} ({args.role}; {scope}) saved")
    if generated:
        print(f"password: {password}")
    return 0


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Store]:
    store = open_store(Path(args.data_dir) / "landun.db", args.database)
    try:
        yield store
    finally:
        store.close()


def list_users(args: argparse.Namespace) -> int:
    with _store(args) as store:
        users = store.list_users()
    for u in users:
        scope = ",".join(u.user.jurisdictions) or "all"
        state = "disabled" if u.disabled else "enabled"
        print(f"{u.user.name}\t{u.user.role}\t{scope}\t{state}\tsince {ms_to_iso(u.created_ms)}")
    return 0


def _change_user(done: str, change: Callable[[Store, str], bool]):
    def command(args: argparse.Namespace) -> int:
        with _store(args) as store:
            found = change(store, args.name)
        if not found:
            raise SystemExit(f"no user {args.name}")
        print(f"user {args.name} {done}")
        return 0

    return command


def create_token(args: argparse.Namespace) -> int:
    _check_scope(args.role, args.jurisdiction)
    if args.days < 0:
        raise SystemExit("--days must be 0 (no expiry) or more; a token cannot start expired")
    token = new_token()
    expires = now_ms() + args.days * 86_400_000 if args.days else None
    who = Principal(args.name, args.role, tuple(args.jurisdiction), kind="token")
    with _store(args) as store:
        store.add_token(token_hash(token), who, expires, label=args.label or "")
    until = ms_to_iso(expires) if expires else "never"
    print(f"token for {args.name} ({args.role}), expires {until}. Shown once; keep it safe:")
    print(token)
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    with _store(args) as store:
        tokens = store.list_tokens(now_ms())
    for t in tokens:
        scope = ",".join(t.jurisdictions) or "all"
        until = ms_to_iso(t.expires_ms) if t.expires_ms else "never"
        kind = "session" if t.kind == "user" else "token"
        print(f"{t.id}\t{kind}\t{t.name}\t{t.role}\t{scope}\texpires {until}\t{t.label}")
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if not store.revoke_token(args.id):
            raise SystemExit(f"no token with id {args.id} (see `landun tokens list`)")
    print(f"token {args.id} revoked")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="manage people who log in").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add or replace a user (a new password ends their sessions)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--jurisdiction", action="append", default=[], help="repeatable")
    add.add_argument("--password", help="default: ask (or --generate-password)")
    add.add_argument("--generate-password", action="store_true")
    add.add_argument("--data-dir", default="var")
    add_database_argument(add)
    add.set_defaults(func=add_user)
    listing = users.add_parser("list", help="list users")
    listing.add_argument("--data-dir", default="var")
    add_database_argument(listing)
    listing.set_defaults(func=list_users)
    for name, what, done, change in (
        ("disable", "refuse the user's logins and end their sessions", "disabled",
         lambda store, who: store.set_user_disabled(who, True)),
        ("enable", "let a disabled user log in again", "enabled",
         lambda store, who: store.set_user_disabled(who, False)),
        ("delete", "delete the user and their sessions", "deleted",
         lambda store, who: store.delete_user(who)),
    ):  # fmt: skip
        one = users.add_parser(name, help=what)
        one.add_argument("name")
        one.add_argument("--data-dir", default="var")
        add_database_argument(one)
        one.set_defaults(func=_change_user(done, change))

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
    listing = tokens.add_parser("list", help="list tokens and login sessions that are valid")
    listing.add_argument("--data-dir", default="var")
    add_database_argument(listing)
    listing.set_defaults(func=list_tokens)
    revoke = tokens.add_parser("revoke", help="revoke a token or login session")
    revoke.add_argument("id", help="its id from `landun tokens list`")
    revoke.add_argument("--data-dir", default="var")
    add_database_argument(revoke)
    revoke.set_defaults(func=revoke_token)
