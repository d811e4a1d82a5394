"""SMS through a provider, with one adapter: Alibaba Cloud SMS (阿里云短信服务, Dysmsapi
2017-05-25) `SendSms`, written against its published API with httpx.

Why not the vendor's SDK: alibabacloud-dysmsapi20170525 brings its own HTTP stack and a tree
of generated packages for one signed POST; the RPC signature below is 15 lines and is checked
in the tests against the worked example of the vendor's documentation.

Vendor facts, from Alibaba Cloud's documentation (checked through copies of it):
- Request (RPC style, "HTTP协议及签名", help.aliyun.com/document_detail/101343.htm): the
  parameters Action=SendSms, Version=2017-05-25, RegionId, PhoneNumbers, SignName,
  TemplateCode, TemplateParam (a JSON object of the template's variables), plus AccessKeyId,
  Format, SignatureMethod=HMAC-SHA1, SignatureVersion=1.0, SignatureNonce (unique per request)
  and Timestamp (UTC, yyyy-MM-ddTHH:mm:ssZ). Signature = base64(HMAC-SHA1(key=secret + "&",
  msg=METHOD + "&" + enc("/") + "&" + enc(sorted "k=v" pairs joined by "&"))), where enc is
  percent-encoding of UTF-8 leaving only A-Z a-z 0-9 - _ . ~ (so space is %20, * is %2A).
- Answer: JSON `{"Code": "OK", "Message": "OK", "BizId": ..., "RequestId": ...}`; any other
  Code is a failure ("API错误码", help.aliyun.com/document_detail/101346.html):
  isv.BUSINESS_LIMIT_CONTROL is the vendor's rate limit (try again later); isp.* are platform
  faults (try again); the rest (bad number, template, signature, key, balance) cannot succeed
  by trying again.
- Text: the message is an approved template (签名 + fixed text + variables); a notification
  template's variable holds 1 to 35 characters unless the limit was lifted, and the whole
  message at most 500 characters (help.aliyun.com/zh/document_detail/3041859.html). These are
  data (alerts/data/channels.toml, [sms]).
- Rate: notifications to one number with one signature and template: 50 a day by default; the
  per-target limit is data too.

Recipient address: a mainland mobile number (11 digits from 1, optionally +86 or 0086)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import ClassVar, Literal, Protocol
from urllib.parse import quote

import httpx

from alerts.channels.base import DeliveryFailed, Notice
from alerts.channels.http import json_answer, post
from alerts.channels.registry import ChannelConfig, ChannelSpec, Secret, register

ENDPOINT = "https://dysmsapi.aliyuncs.com/"
MOBILE = re.compile(r"(?:\+86|0086)?1\d{10}")
VAR_MAX_CHARS = 35  # a notification template's variable, unless the account's limit was lifted
MESSAGE_MAX_CHARS = 500  # signature, fixed text and variables together
# The notice fields a template variable may take its value from.
Source = Literal["site_id", "title", "severity", "family", "action", "level", "alert_id"]
SEVERITY_ZH = {"info": "提示", "warning": "警告", "critical": "严重"}


class SmsProvider(Protocol):
    def send(self, phone: str, params: Mapping[str, str]) -> None:
        """Send the configured template with these variables to one number, or raise
        DeliveryFailed."""
        ...


def percent(text: str) -> str:
    """Alibaba's POP encoding: RFC 3986 unreserved characters kept, everything else %XX."""
    return quote(text, safe="~")


def rpc_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """The `Signature` parameter (plain base64; the form encoding escapes it once more)."""
    canonical = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{percent('/')}&{percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunSms:
    """Dysmsapi SendSms with one signature name and template."""

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        template_code: str,
        endpoint: str = ENDPOINT,
        region: str = "cn-hangzhou",
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key_id, self.secret = access_key_id, access_key_secret
        self.sign_name, self.template_code = sign_name, template_code
        self.endpoint, self.region, self.timeout_s = endpoint, region, timeout_s
        self.clock = clock
        self._client = httpx.Client()

    def request(self, phone: str, params: Mapping[str, str]) -> dict[str, str]:
        """The signed form of one SendSms call."""
        form = {
            "AccessKeyId": self.key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "PhoneNumbers": phone,
            "RegionId": self.region,
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "TemplateCode": self.template_code,
            "TemplateParam": json.dumps(dict(params), ensure_ascii=False),
            "Timestamp": datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25",
        }
        form["Signature"] = rpc_signature(self.secret, "POST", form)
        return form

    def send(self, phone: str, params: Mapping[str, str]) -> None:
        status, raw = post(
            self._client, self.endpoint, self.timeout_s, data=self.request(phone, params)
        )
        try:
            answer = json_answer(status, raw, "Alibaba Cloud SMS")
        except DeliveryFailed as exc:
            # Alibaba answers refused calls with HTTP 4xx and the code in the JSON body.
            refusal = _json_object(raw)
            if refusal is None:
                raise exc from None
            answer = refusal
        code = str(answer.get("Code", ""))
        if code == "OK":
            return
        reason = f"Alibaba Cloud SMS {code}: {str(answer.get('Message', ''))[:200]}"
        if code == "isv.BUSINESS_LIMIT_CONTROL":
            raise DeliveryFailed(reason, retry_after_s=60.0)
        raise DeliveryFailed(reason, retry=code.startswith("isp."))


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class SmsConfig(ChannelConfig):
    provider: Literal["aliyun"] = "aliyun"
    access_key_id: Secret
    access_key_secret: Secret
    sign_name: str
    template_code: str
    # template variable -> the notice field that fills it (a Source)
    template_params: dict[str, Source]
    endpoint: str = ENDPOINT
    region: str = "cn-hangzhou"
    timeout_s: float = 10.0
    var_max_chars: int = VAR_MAX_CHARS
    message_max_chars: int = MESSAGE_MAX_CHARS


def template_values(notice: Notice, params: Mapping[str, str], var_max: int) -> dict[str, str]:
    """Each variable's value from its notice field, cut to `var_max` characters."""
    out = {}
    for var, field in params.items():
        value = str(getattr(notice, field))
        if field == "severity":
            value = SEVERITY_ZH.get(value, value)
        value = " ".join(value.split())  # no line breaks inside a template variable
        out[var] = value if len(value) <= var_max else value[: var_max - 1] + "…"
    return out


class SmsChannel:
    name: ClassVar[str] = "sms"

    def __init__(
        self,
        provider: SmsProvider,
        params: Mapping[str, str],
        sign_name: str,
        var_max_chars: int,
        message_max_chars: int,
    ) -> None:
        self.provider = provider
        self.params = params
        self.sign_name = sign_name
        self.var_max_chars = var_max_chars
        self.message_max_chars = message_max_chars

    def send(self, notice: Notice) -> None:
        phone = notice.recipient.address
        if not MOBILE.fullmatch(phone):
            raise DeliveryFailed(f"not a mainland mobile number: {phone[:40]!r}", retry=False)
        values = template_values(notice, self.params, self.var_max_chars)
        size = len(self.sign_name) + 2 + sum(len(v) for v in values.values())
        if size > self.message_max_chars:
            raise DeliveryFailed(
                f"SMS of at least {size} characters (signature and variables) is over the"
                f" {self.message_max_chars}-character limit",
                retry=False,
            )
        self.provider.send(phone, values)


def build(config: SmsConfig) -> SmsChannel:
    provider = AliyunSms(
        config.access_key_id.reveal(),
        config.access_key_secret.reveal(),
        config.sign_name,
        config.template_code,
        config.endpoint,
        config.region,
        config.timeout_s,
    )
    return SmsChannel(
        provider,
        config.template_params,
        config.sign_name,
        config.var_max_chars,
        config.message_max_chars,
    )


SPEC = register(ChannelSpec("sms", SmsConfig, build))
