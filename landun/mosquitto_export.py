"""`landun devices export-mosquitto`: Mosquitto's password file and ACL from the registry.

Every MQTT device is a broker user named after its device id (HJ 212 loggers, which have an
`mn` and talk TCP to the gateway, get no broker account); the ACL's `pattern` line lets a user
write only below `landun/v1/devices/<its own name>/`, so a device cannot speak for another. The
registry keeps only a credential hash, so device passwords come from a secrets file the operator
keeps outside the repository (`--device-secrets FILE`, TOML lines `"device-id" = "password"`);
with `--generate`, devices missing from it get fresh random passwords appended to it (mode 0600).

Service accounts get a section each in the ACL, by role:
  ingest       reads every device topic (also through `$share/...`: Mosquitto 2 checks the ACL on
               the topic without the share prefix) and publishes alerts;
  simulators   writes every device topic: one connection speaks for all simulated devices, so
               create it only where no real device publishes;
  healthcheck  reads `$SYS/broker/uptime`; always exported, with a generated password written to
               `healthcheck.secret` for the container health check;
  any other    (api, inspector, dashboard, ...) reads alerts only.

Password hashes are Mosquitto 2's `$7$` format (PBKDF2-HMAC-SHA512 with the iteration count in
the hash, 12-byte salt, standard base64; Mosquitto 2.0 verifies any count), made here rather
than with `mosquitto_passwd -U` so that no plaintext password file is ever written, the count is
Landun's choice, and the export works where Mosquitto is not installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from domain.registry import Registry, load_registry

# Service accounts (ingest, api, ...) have passwords people choose: the OWASP Password Storage
# Cheat Sheet's count for PBKDF2-HMAC-SHA512. mosquitto_passwd 2.0 writes 101, far too few.
SERVICE_ITERATIONS = 210_000
# Device and health-check passwords are generated (192 random bits), which no count makes easier
# or harder to guess; the broker pays the count at every login, single-threaded, and a
# province's 5,000 devices reconnecting at once must not hold it for minutes.
DEVICE_ITERATIONS = 10_000
SALT_BYTES = 12
HEALTHCHECK_USER = "healthcheck"
# What the ingest topic regex accepts; also keeps MQTT wildcards and ':' out of user names.
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

DEVICE_PATTERN = "pattern write landun/v1/devices/%u/#"
RESERVED_CLIENT_PREFIX = "landun-"  # ingest, alert publisher and simulator client ids
ROLE_TOPICS: dict[str, tuple[str, ...]] = {
    "ingest": ("topic read landun/v1/devices/+/+", "topic write landun/v1/alerts/#"),
    "simulators": ("topic write landun/v1/devices/+/+",),
    HEALTHCHECK_USER: ("topic read $SYS/broker/uptime",),
}
READER_TOPICS = ("topic read landun/v1/alerts/#",)


@dataclass(frozen=True, slots=True)
class ExportResult:
    passwd: Path
    acl: Path
    healthcheck_secret: Path
    users: int
    generated: tuple[str, ...]  # devices that got a new password in the secrets file


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = SERVICE_ITERATIONS
) -> str:
    """A password_file hash as `mosquitto_passwd` writes it: $7$<iterations>$<salt>$<hash>."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Verify a $7$ hash (the check Mosquitto makes at login)."""
    _, kind, iterations, salt, digest = hashed.split("$")
    if kind != "7":
        raise ValueError(f"not a $7$ (PBKDF2-SHA512) hash: {hashed[:4]}")
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return secrets.compare_digest(base64.b64encode(got).decode(), digest)


def load_device_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    doc = tomllib.loads(path.read_text("utf-8"))
    bad = [k for k, v in doc.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f'{path}: expected "device-id" = "password" lines; not for {bad}')
    return doc


def _append_secrets(path: Path, new: Mapping[str, str]) -> None:
    # Appending to a hand-edited file whose last line lacks its newline would join two lines.
    text = path.read_bytes() if path.exists() else b""
    lead = "\n" if text and not text.endswith(b"\n") else ""
    # Created 0600 before any secret is written into it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(lead)
        for device_id, password in new.items():
            # JSON string escaping is valid TOML basic-string escaping.
            f.write(f"{json.dumps(device_id)} = {json.dumps(password)}\n")


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)  # O_CREAT's mode does not apply to an existing leftover file
    # Atomic replace: a broker reloading (SIGHUP) never reads half a file.
    tmp.replace(path)


def render_acl(service_users: Mapping[str, str], source: str) -> str:
    lines = [
        f"# Generated by `landun devices export-mosquitto` from {source}; re-export, do not edit.",
        "# Every user may write below its own device topic and nowhere else by default.",
        DEVICE_PATTERN,
        "",
    ]
    for name in sorted(service_users):
        lines += [f"user {name}", *ROLE_TOPICS.get(name, READER_TOPICS), ""]
    return "\n".join(lines)


def export_mosquitto(
    registry: Registry,
    out_dir: Path,
    service_users: dict[str, str],
    device_secrets: Path,
    generate: bool = False,
    source: str = "the registry",
) -> ExportResult:
    """Write `passwd`, `acl` and `healthcheck.secret` into out_dir for every registry device and
    service user. Devices without a password in device_secrets are an error, unless generate."""
    clash = sorted(set(service_users) & set(registry.devices))
    if clash:
        raise ValueError(f"service user names that are also device ids: {clash}")
    bad = [n for n in (*registry.devices, *service_users) if not _NAME.match(n)]
    if bad:
        raise ValueError(f"user names must match {_NAME.pattern}: {bad}")
    if HEALTHCHECK_USER in service_users:
        raise ValueError(f"{HEALTHCHECK_USER!r} is created by the export itself")
    # On the device listener a device's client id is its user name (use_username_as_clientid):
    # a device named like one of Landun's own clients could take over that client's session.
    reserved = sorted(d for d in registry.devices if d.startswith(RESERVED_CLIENT_PREFIX))
    if reserved:
        raise ValueError(
            f"device ids must not start with {RESERVED_CLIENT_PREFIX!r}, which names Landun's"
            f" own MQTT clients: {reserved}"
        )

    mqtt_devices = sorted(d.id for d in registry.devices.values() if d.mn is None)
    known = load_device_secrets(device_secrets)
    missing = [d for d in mqtt_devices if d not in known]
    if missing and not generate:
        raise ValueError(
            f"no password for {len(missing)} device(s) in {device_secrets}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
            " (add them, or pass --generate)"
        )
    fresh = {d: secrets.token_urlsafe(24) for d in missing}
    if fresh:
        _append_secrets(device_secrets, fresh)

    out_dir.mkdir(parents=True, exist_ok=True)
    health_password = secrets.token_urlsafe(24)
    users = {**{d: known.get(d) or fresh[d] for d in mqtt_devices}, **service_users}
    users[HEALTHCHECK_USER] = health_password
    iterations = {u: SERVICE_ITERATIONS if u in service_users else DEVICE_ITERATIONS for u in users}

    passwd = out_dir / "passwd"
    acl = out_dir / "acl"
    health = out_dir / "healthcheck.secret"
    # Hashes only, but unreadable to others anyway; the broker container reads them as root.
    lines = [f"{u}:{hash_password(p, None, iterations[u])}\n" for u, p in sorted(users.items())]
    _write(passwd, "".join(lines), 0o600)
    _write(acl, render_acl({**service_users, HEALTHCHECK_USER: ""}, source), 0o644)
    _write(health, health_password + "\n", 0o600)
    return ExportResult(passwd, acl, health, len(users), tuple(fresh))


# -- command line -----------------------------------------------------------------------------


def _parse_service(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(f"--service {text!r}: expected NAME:PASSWORD")
    return name, password


def _export(args: argparse.Namespace) -> int:
    try:
        result = export_mosquitto(
            load_registry(Path(args.registry)),
            Path(args.out),
            dict(args.service),
            Path(args.device_secrets),
            generate=args.generate,
            source=args.registry,
        )
    except (ValueError, OSError) as exc:
        # A refusal with its reason and the fix, not a traceback; nothing was written.
        print(f"landun devices export-mosquitto: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {result.passwd} ({result.users} users), {result.acl}, {result.healthcheck_secret}"
    )
    if result.generated:
        print(f"new passwords for {len(result.generated)} device(s) in {args.device_secrets}")
    print("reload a running broker with: docker compose kill -s HUP mosquitto")
    return 0


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register `landun devices export-mosquitto` on the top-level subparsers."""
    devices = sub.add_parser("devices", help="device registry tools")
    actions = devices.add_subparsers(dest="devices_command", required=True)
    p = actions.add_parser(
        "export-mosquitto", help="write Mosquitto's passwd and acl for the registry"
    )
    p.add_argument("--registry", required=True, help="registry TOML")
    p.add_argument("--out", required=True, help="directory for passwd, acl, healthcheck.secret")
    p.add_argument(
        "--device-secrets",
        required=True,
        help='TOML file of "device-id" = "password" lines, kept outside the repository',
    )
    p.add_argument(
        "--generate",
        action="store_true",
        help="give devices missing from --device-secrets a random password, appended to it",
    )
    p.add_argument(
        "--service",
        type=_parse_service,
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="a service account (ingest, simulators, or a reader of alerts); repeatable",
    )
    p.set_defaults(func=_export)
