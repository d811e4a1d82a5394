"""E-mail over SMTP with STARTTLS, through the same sender as the scheduled reports
(domain.smtp). One plain-text message per notice; the recipient address is the e-mail.

Limits: RFC 5321 §4.5.3.1 bounds a mailbox's local part to 64 octets and a domain to 255
(an address of more than 254 characters cannot be delivered); headers may not carry CR or LF
(EmailMessage refuses them, which stops header injection through a title)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr
from typing import ClassVar

from alerts.channels.base import DeliveryFailed, Notice
from alerts.channels.registry import ChannelConfig, ChannelSpec, Secret, register
from domain.smtp import SmtpServer, send_mail

ADDRESS_MAX = 254
TEXT_MAX_CHARS = 20_000  # a notice is a few lines; bounds a message built from hostile text
SUBJECT_MAX_CHARS = 200


class EmailConfig(ChannelConfig):
    host: str
    port: int = 587
    sender: str
    username: str | None = None
    password: Secret | None = None
    cafile: str | None = None
    timeout_s: float = 30.0


def message(notice: Notice, sender: str) -> EmailMessage:
    to = notice.recipient.address
    local, at, domain = to.rpartition("@")
    if not at or not local or not domain or len(to) > ADDRESS_MAX or any(c in to for c in "\r\n ,"):
        raise DeliveryFailed(f"not a deliverable e-mail address: {to[:80]!r}", retry=False)
    subject = " ".join(notice.title.split())[:SUBJECT_MAX_CHARS]
    text = notice.text
    if len(text) > TEXT_MAX_CHARS:
        text = text[:TEXT_MAX_CHARS] + "…（已截断）"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = formataddr((notice.recipient.name, to)) if notice.recipient.name else to
    link = f"\n\n查看告警：{notice.url}" if notice.url else ""
    msg.set_content(f"{text}{link}\n\n此邮件由蓝盾在线监测系统自动发送。")
    return msg


class EmailChannel:
    name: ClassVar[str] = "email"

    def __init__(self, server: SmtpServer, sender: str) -> None:
        self.server = server
        self.sender = sender

    def send(self, notice: Notice) -> None:
        msg = message(notice, self.sender)
        try:
            send_mail(self.server, msg)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            raise DeliveryFailed(f"SMTP refused: {exc}", retry=False) from None
        except (smtplib.SMTPNotSupportedError, smtplib.SMTPAuthenticationError) as exc:
            # No STARTTLS, or a wrong login: configuration, not a passing fault.
            raise DeliveryFailed(f"SMTP: {type(exc).__name__}: {exc}", retry=False) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryFailed(f"SMTP certificate: {exc.verify_message}", retry=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP: {type(exc).__name__}: {exc}") from None


def build(config: EmailConfig) -> EmailChannel:
    password = config.password.reveal() if config.password is not None else None
    server = SmtpServer(
        config.host, config.port, config.username, password, config.cafile, config.timeout_s
    )
    return EmailChannel(server, config.sender)


SPEC = register(ChannelSpec("email", EmailConfig, build))
