"""企业微信 (WeCom) group robot: a markdown message POSTed to the robot's webhook.

Vendor facts, from the WeCom developer documentation "群机器人配置说明"
(https://developer.work.weixin.qq.com/document/path/91770, checked through copies of it):
- POST JSON `{"msgtype": "markdown", "markdown": {"content": ...}}` to
  `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`, UTF-8.
- markdown `content`: at most 4096 bytes of UTF-8 (errcode 40058 "markdown.content exceed max
  length 4096" past it).
- Each robot sends at most 20 messages a minute (the rate limit is data: alerts/data/channels.toml).
- The answer is `{"errcode": 0, "errmsg": "ok"}`; any other errcode is a failure: 93000 "invalid
  webhook url" (a wrong or deleted key) and 40058 cannot succeed by trying again; 45009 "api freq
  out of limit" and -1 (system busy) can, after a pause.

Recipient address: the robot's name in notify.toml (`[wecom.robots.NAME]`); its key stays in
the environment or a secret file, never in the store or the logs."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field

from alerts.channels.base import DeliveryFailed, Notice
from alerts.channels.http import fit_utf8, json_answer, post
from alerts.channels.registry import ChannelConfig, ChannelSpec, Secret, register

CONTENT_MAX_BYTES = 4096
RETRYABLE = {-1: 5.0, 45009: 60.0}  # errcode -> seconds to wait before the next try
URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"


class Robot(ChannelConfig):
    key: Secret


class WecomConfig(ChannelConfig):
    url: str = URL  # a stand-in's address in tests
    timeout_s: float = 10.0
    robots: dict[str, Robot] = Field(default_factory=dict)


def markdown(notice: Notice) -> str:
    """The message as WeCom markdown, within its byte limit (the text is cut, never the link)."""
    head = f"## {notice.title}\n"
    tail = f"\n[查看告警]({notice.url})" if notice.url else ""
    return fit_utf8(head, notice.text, tail, CONTENT_MAX_BYTES, "the WeCom markdown content")


class WecomChannel:
    name: ClassVar[str] = "wecom"

    def __init__(self, url: str, keys: dict[str, str], timeout_s: float = 10.0) -> None:
        self.url = url
        self.keys = keys
        self.timeout_s = timeout_s
        self._client = httpx.Client()

    def send(self, notice: Notice) -> None:
        robot = notice.recipient.address
        key = self.keys.get(robot)
        if key is None:
            raise DeliveryFailed(f"no WeCom robot named {robot!r} in notify.toml", retry=False)
        body = {"msgtype": "markdown", "markdown": {"content": markdown(notice)}}
        status, raw = post(
            self._client, f"{self.url}?key={quote(key, safe='')}", self.timeout_s, json=body
        )
        answer = json_answer(status, raw, "WeCom")
        code = answer.get("errcode")
        if code == 0:
            return
        reason = f"WeCom errcode {code}: {str(answer.get('errmsg', ''))[:200]}"
        if code in RETRYABLE:
            raise DeliveryFailed(reason, retry_after_s=RETRYABLE[code])
        raise DeliveryFailed(reason, retry=False)


def build(config: WecomConfig) -> WecomChannel:
    keys = {name: robot.key.reveal() for name, robot in config.robots.items()}
    return WecomChannel(config.url, keys, config.timeout_s)


SPEC = register(ChannelSpec("wecom", WecomConfig, build))
