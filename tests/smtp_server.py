"""A real local SMTP server (aiosmtpd) with STARTTLS on a throwaway certificate, for the
report mailer's and the e-mail channel's tests."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], bytes, bool]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        self.mails.append((envelope.rcpt_tos, envelope.original_content, session.ssl is not None))
        return "250 OK"


def make_cert(tmp_path: Path) -> tuple[str, str]:
    """(cert, key) files of a self-signed certificate for 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test server's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def start_smtp(inbox: Inbox, tls: tuple[str, str] | None):
    """A running aiosmtpd Controller (call .stop()); STARTTLS required when `tls` is given."""
    from aiosmtpd.controller import Controller

    kwargs = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        kwargs = {"tls_context": context, "require_starttls": True}
    server = Controller(inbox, hostname="127.0.0.1", port=_free_port(), **kwargs)
    server.start()
    return server
