"""The broker options every command that speaks MQTT takes, and the login from env or a file.

    --broker mqtts://host:8883 --broker-ca FILE [--broker-cert FILE --broker-key FILE]
    LANDUN_BROKER_USERNAME, LANDUN_BROKER_PASSWORD or --broker-password-file FILE

The password never comes from the command line: argv is readable by every user of the machine."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from domain.mqtt_connection import MQTT_VERSIONS, BrokerAddress

USERNAME_ENV = "LANDUN_BROKER_USERNAME"
PASSWORD_ENV = "LANDUN_BROKER_PASSWORD"
MAX_PASSWORD_FILE_BYTES = 4096


def add_arguments(p: argparse.ArgumentParser, broker_help: str, default: str | None = None) -> None:
    p.add_argument("--broker", default=default, help=broker_help)
    p.add_argument(
        "--broker-ca", type=Path, help="CA certificate file (PEM) for mqtts:// or wss://"
    )
    p.add_argument("--broker-cert", type=Path, help="client certificate (PEM), if the broker asks")
    p.add_argument("--broker-key", type=Path, help="the client certificate's key (PEM)")
    p.add_argument(
        "--broker-no-hostname-check",
        action="store_true",
        help="accept a broker certificate issued for another host name (not recommended)",
    )
    p.add_argument(
        "--broker-password-file",
        type=Path,
        help=f"file holding the broker password (else ${PASSWORD_ENV}); user: ${USERNAME_ENV}",
    )
    p.add_argument(
        "--mqtt-version", choices=list(MQTT_VERSIONS), default="3.1.1", help="MQTT protocol"
    )


def read_password_file(path: Path) -> str:
    with path.open("rb") as f:
        raw = f.read(MAX_PASSWORD_FILE_BYTES + 1)
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        raise ValueError(f"{path}: more than {MAX_PASSWORD_FILE_BYTES} bytes; not a password file")
    # Only the line end is trimmed: other spaces may belong to the password.
    return raw.decode("utf-8").rstrip("\r\n")


def address_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> BrokerAddress | None:
    """The broker the options name, with its login; None if no --broker was given."""
    if args.broker is None:
        if args.broker_ca or args.broker_cert or args.broker_key:
            raise ValueError("--broker-ca, --broker-cert and --broker-key need --broker")
        return None
    password = environ.get(PASSWORD_ENV) or None
    if args.broker_password_file is not None:
        if password is not None:
            raise ValueError(f"both ${PASSWORD_ENV} and --broker-password-file are set")
        password = read_password_file(args.broker_password_file)
    username = environ.get(USERNAME_ENV) or None
    if password is not None and username is None:
        raise ValueError(f"a broker password needs a user name: set ${USERNAME_ENV}")
    return BrokerAddress.parse(
        args.broker,
        username=username,
        password=password,
        ca_file=args.broker_ca,
        cert_file=args.broker_cert,
        key_file=args.broker_key,
        check_hostname=not args.broker_no_hostname_check,
        mqtt_version=args.mqtt_version,
    )
