"""钉钉 (DingTalk) custom group robot: a markdown message to a signed webhook URL.

Vendor facts, from the DingTalk open platform documentation "自定义机器人接入" and "自定义机器人
安全设置" (https://open.dingtalk.com/document/robots/custom-robot-access,
https://open.dingtalk.com/document/robots/customize-robot-security-settings, checked through
copies of them):
- POST JSON `{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}`, UTF-8, to
  `https://oapi.dingtalk.com/robot/send?access_token=TOKEN&timestamp=T&sign=S`.
- Signing (加签): `T` is the time in milliseconds (within an hour of DingTalk's clock);
  `S` = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{T}\\n{secret}"))), the secret being the
  `SEC...` string of the robot's security settings.
- Each robot sends at most 20 messages a minute; past that DingTalk throttles it for 10 minutes
  (errcode 130101 "send too fast"). The rate limit is data: alerts/data/channels.toml.
- The answer is `{"errcode": 0, "errmsg": "ok"}`. 310000 (signature mismatch, timestamp too far
  off, keyword missing, IP not allowed) and 300001 (token does not exist) cannot succeed by
  trying again; 130101 and -1 (system busy) can, after a pause.
- The markdown text has no documented byte limit for robots; TEXT_MAX_BYTES is the 20,000 bytes
  commonly reported for robot messages (low confidence).

Recipient address: the robot's name in notify.toml (`[dingtalk.robots.NAME]`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import ClassVar
from urllib.parse import quote_plus

import httpx
from pydantic import Field

from alerts.channels.base import DeliveryFailed, Notice
from alerts.channels.http import fit_utf8, json_answer, post
from alerts.channels.registry import ChannelConfig, ChannelSpec, Secret, register

TEXT_MAX_BYTES = 20_000
RETRYABLE = {-1: 5.0, 130101: 600.0}  # errcode -> seconds to wait before the next try
URL = "https://oapi.dingtalk.com/robot/send"


class Robot(ChannelConfig):
    access_token: Secret
    secret: Secret  # 加签; robots secured only by keyword or IP are not supported


class DingtalkConfig(ChannelConfig):
    url: str = URL
    timeout_s: float = 10.0
    robots: dict[str, Robot] = Field(default_factory=dict)


def sign(secret: str, timestamp_ms: int) -> str:
    """The `sign` query value, already URL-encoded as DingTalk's examples do."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return quote_plus(base64.b64encode(digest))


class DingtalkChannel:
    name: ClassVar[str] = "dingtalk"

    def __init__(
        self,
        url: str,
        robots: dict[str, tuple[str, str]],  # name -> (access token, signing secret)
        timeout_s: float = 10.0,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.url = url
        self.robots = robots
        self.timeout_s = timeout_s
        self.clock_ms = clock_ms
        self._client = httpx.Client()

    def send(self, notice: Notice) -> None:
        robot = notice.recipient.address
        if robot not in self.robots:
            raise DeliveryFailed(f"no DingTalk robot named {robot!r} in notify.toml", retry=False)
        token, secret = self.robots[robot]
        head = f"### {notice.title}\n\n"
        tail = f"\n\n[查看告警]({notice.url})" if notice.url else ""
        text = fit_utf8(head, notice.text, tail, TEXT_MAX_BYTES, "the DingTalk markdown text")
        body = {"msgtype": "markdown", "markdown": {"title": notice.title, "text": text}}
        ts = self.clock_ms()
        url = f"{self.url}?access_token={quote_plus(token)}&timestamp={ts}&sign={sign(secret, ts)}"
        status, raw = post(self._client, url, self.timeout_s, json=body)
        answer = json_answer(status, raw, "DingTalk")
        code = answer.get("errcode")
        if code == 0:
            return
        reason = f"DingTalk errcode {code}: {str(answer.get('errmsg', ''))[:200]}"
        if code in RETRYABLE:
            raise DeliveryFailed(reason, retry_after_s=RETRYABLE[code])
        raise DeliveryFailed(reason, retry=False)


def build(config: DingtalkConfig) -> DingtalkChannel:
    robots = {
        name: (r.access_token.reveal(), r.secret.reveal()) for name, r in config.robots.items()
    }
    return DingtalkChannel(config.url, robots, config.timeout_s)


SPEC = register(ChannelSpec("dingtalk", DingtalkConfig, build))
