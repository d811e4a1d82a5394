"""Each notification channel against a stand-in of its vendor (tests/vendors.py: real HTTP
servers checking signature, fields and length as the vendor documents them) or, for e-mail,
a real local SMTP server with STARTTLS (aiosmtpd). Hostile input: over-long text is cut to the
vendor's limit or refused with the reason; bad addresses never reach the vendor."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from alerts.channels import dingtalk, email, sms, webhook, wecom
from alerts.channels.base import DeliveryFailed, Notice, Recipient
from alerts.channels.http import CUT
from alerts.channels.registry import discovered
from alerts.channels.settings import build_outbox, load_channel_settings
from alerts.settings_files import SettingsError
from alerts.startup_settings import load_settings
from store.sqlite import SqliteStore
from tests.smtp_server import Inbox, make_cert, start_smtp
from tests.vendors import AliyunSms, Dingtalk, StandIn, Wecom


def notice(channel: str, address: str, **kw) -> Notice:
    fields = {
        "alert_id": 7,
        "level": 1,
        "action": "escalated",
        "severity": "critical",
        "family": "compliance",
        "site_id": "pool-xh-01",
        "title": "游离性余氯低于限值",
        "text": "**徐汇游泳馆** 游离性余氯 0.12 mg/L，低于 0.3 mg/L 已 30 分钟。",
        "url": "https://landun.example.cn/alerts/7",
        "recipient": Recipient(channel, address, "王科长"),
    }
    return Notice(**(fields | kw))


def test_every_channel_module_registers_itself() -> None:
    assert set(discovered()) >= {"wecom", "dingtalk", "email", "sms", "webhook"}
    for name, spec in discovered().items():
        assert spec.name == name


# -- WeCom -------------------------------------------------------------------------------------


@pytest.fixture
def wecom_vendor():
    vendor = Wecom({"k-ops"})
    yield vendor
    vendor.stand_in.close()


def _wecom(vendor: Wecom, **robots: str) -> wecom.WecomChannel:
    return wecom.WecomChannel(f"{vendor.stand_in.url}/cgi-bin/webhook/send", robots)


def test_wecom_markdown_reaches_the_robot(wecom_vendor) -> None:
    _wecom(wecom_vendor, ops="k-ops").send(notice("wecom", "ops"))
    [content] = wecom_vendor.contents["k-ops"]
    assert content.startswith("## 游离性余氯低于限值\n**徐汇游泳馆**")
    assert content.endswith("[查看告警](https://landun.example.cn/alerts/7)")


def test_wecom_over_long_text_is_cut_to_4096_bytes_keeping_the_link(wecom_vendor) -> None:
    _wecom(wecom_vendor, ops="k-ops").send(notice("wecom", "ops", text="超标" * 5000))
    [content] = wecom_vendor.contents["k-ops"]  # the vendor took it: within 4096 bytes
    assert 4090 <= len(content.encode()) <= 4096
    assert CUT in content and content.endswith("(https://landun.example.cn/alerts/7)")


def test_wecom_refuses_what_cannot_fit_and_never_sends_it(wecom_vendor) -> None:
    channel = _wecom(wecom_vendor, ops="k-ops")
    with pytest.raises(DeliveryFailed) as e:
        channel.send(notice("wecom", "ops", url="https://x.cn/" + "a" * 5000))
    assert not e.value.retry
    assert e.value.reason == (
        "the WeCom markdown content is over its limit of 4096 UTF-8 bytes even without the text"
    )
    assert wecom_vendor.stand_in.requests == []


def test_wecom_errcodes_say_whether_to_try_again(wecom_vendor) -> None:
    with pytest.raises(DeliveryFailed) as e:
        _wecom(wecom_vendor, ops="k-wrong").send(notice("wecom", "ops"))
    assert e.value.reason == "WeCom errcode 93000: invalid webhook url" and not e.value.retry
    wecom_vendor.errcodes.append(45009)
    with pytest.raises(DeliveryFailed) as e:
        _wecom(wecom_vendor, ops="k-ops").send(notice("wecom", "ops"))
    assert e.value.retry and e.value.retry_after_s == 60.0
    with pytest.raises(DeliveryFailed, match="no WeCom robot named 'nobody'") as e:
        _wecom(wecom_vendor, ops="k-ops").send(notice("wecom", "nobody"))
    assert not e.value.retry


def test_a_hostile_vendor_answer_is_bounded_and_named() -> None:
    answers = [(200, "x" * 100_000), (200, ["not", "an", "object"]), (502, {})]
    vendor = StandIn(lambda path, query, body: answers.pop(0))
    channel = wecom.WecomChannel(vendor.url, {"ops": "k"})
    try:
        reasons = []
        for _ in range(3):
            with pytest.raises(DeliveryFailed) as e:
                channel.send(notice("wecom", "ops"))
            reasons.append((e.value.reason, e.value.retry))
    finally:
        vendor.close()
    assert reasons == [
        ("answer over 65536 bytes", True),
        ("WeCom: HTTP 200 with an answer that is not a JSON object", True),
        ("WeCom: HTTP 502", True),
    ]


# -- DingTalk ----------------------------------------------------------------------------------


@pytest.fixture
def dingtalk_vendor():
    vendor = Dingtalk({"tok-duty": "SECabc123"})
    yield vendor
    vendor.stand_in.close()


def test_dingtalk_signed_markdown_is_accepted(dingtalk_vendor) -> None:
    url = f"{dingtalk_vendor.stand_in.url}/robot/send"
    dingtalk.DingtalkChannel(url, {"duty": ("tok-duty", "SECabc123")}).send(
        notice("dingtalk", "duty", text="余氯+低 & pH/高 ~ 50%")  # characters URL encoding meets
    )
    [md] = dingtalk_vendor.messages
    assert md["title"] == "游离性余氯低于限值"
    assert md["text"].startswith("### 游离性余氯低于限值\n\n余氯+低 & pH/高 ~ 50%")


def test_dingtalk_wrong_secret_is_refused_for_good(dingtalk_vendor) -> None:
    url = f"{dingtalk_vendor.stand_in.url}/robot/send"
    with pytest.raises(DeliveryFailed) as e:
        dingtalk.DingtalkChannel(url, {"duty": ("tok-duty", "SECwrong")}).send(
            notice("dingtalk", "duty")
        )
    assert e.value.reason == "DingTalk errcode 310000: sign not match" and not e.value.retry


def test_dingtalk_over_long_text_is_cut(dingtalk_vendor) -> None:
    url = f"{dingtalk_vendor.stand_in.url}/robot/send"
    channel = dingtalk.DingtalkChannel(url, {"duty": ("tok-duty", "SECabc123")})
    channel.send(notice("dingtalk", "duty", text="超" * 10_000))
    [md] = dingtalk_vendor.messages
    assert len(md["text"].encode()) <= dingtalk.TEXT_MAX_BYTES and CUT in md["text"]


# -- SMS (Alibaba Cloud) -----------------------------------------------------------------------


def test_rpc_signature_matches_the_vendors_worked_example() -> None:
    """The example of Alibaba Cloud's "HTTP协议及签名" for SendSms (testId / testSecret), whose
    documented result is Signature=zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D (GET)."""
    params = {
        "AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123",
        "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用", "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466", "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007", "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z", "Version": "2017-05-25",
    }  # fmt: skip
    signature = sms.rpc_signature("testSecret", "GET", params)
    assert sms.percent(signature) == "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D"


@pytest.fixture
def sms_vendor():
    vendor = AliyunSms("LTAI-id", "key-secret", "蓝盾监测", "SMS_465000001", ["site", "title"])
    yield vendor
    vendor.stand_in.close()


def _sms(vendor: AliyunSms, secret: str = "key-secret") -> sms.SmsChannel:
    provider = sms.AliyunSms(
        "LTAI-id", secret, "蓝盾监测", "SMS_465000001", endpoint=vendor.stand_in.url + "/"
    )
    return sms.SmsChannel(provider, {"site": "site_id", "title": "title"}, "蓝盾监测", 35, 500)


def test_sms_goes_out_with_the_templates_variables(sms_vendor) -> None:
    _sms(sms_vendor).send(notice("sms", "+8613800138000"))
    assert sms_vendor.sent == [
        ("13800138000", {"site": "pool-xh-01", "title": "游离性余氯低于限值"})
    ]


def test_sms_variables_are_cut_to_the_vendors_35_characters(sms_vendor) -> None:
    _sms(sms_vendor).send(notice("sms", "13800138000", title="超标" * 40))
    [(_, values)] = sms_vendor.sent
    assert len(values["title"]) == 35 and values["title"].endswith("…")


def test_sms_refusals_wrong_number_bad_key_and_flow_control(sms_vendor) -> None:
    with pytest.raises(DeliveryFailed) as e:
        _sms(sms_vendor).send(notice("sms", "138-0013-8000"))
    assert e.value.reason == "not a mainland mobile number: '138-0013-8000'"
    assert sms_vendor.stand_in.requests == []  # never reached the vendor
    with pytest.raises(DeliveryFailed) as e:
        _sms(sms_vendor, secret="wrong").send(notice("sms", "13800138000"))
    assert (
        e.value.reason.startswith("Alibaba Cloud SMS SignatureDoesNotMatch") and not e.value.retry
    )
    sms_vendor.codes.append("isv.BUSINESS_LIMIT_CONTROL")
    with pytest.raises(DeliveryFailed) as e:
        _sms(sms_vendor).send(notice("sms", "13800138000"))
    assert e.value.retry and e.value.retry_after_s == 60.0


def test_sms_over_the_whole_message_limit_is_refused(sms_vendor) -> None:
    channel = _sms(sms_vendor)
    channel.message_max_chars = 20
    with pytest.raises(DeliveryFailed) as e:
        channel.send(notice("sms", "13800138000"))
    assert e.value.reason == (
        "SMS of at least 25 characters (signature and variables) is over the 20-character limit"
    )
    assert not e.value.retry and sms_vendor.stand_in.requests == []


# -- e-mail ------------------------------------------------------------------------------------


@pytest.fixture
def smtp_tls(tmp_path: Path):
    cert = make_cert(tmp_path)
    inbox = Inbox()
    server = start_smtp(inbox, cert)
    yield inbox, server.port, cert[0]
    server.stop()


def test_email_goes_over_starttls(smtp_tls) -> None:
    from domain.smtp import SmtpServer

    inbox, port, cafile = smtp_tls
    channel = email.EmailChannel(SmtpServer("127.0.0.1", port, cafile=cafile), "landun@x.cn")
    channel.send(notice("email", "wang@xuhui.example.cn", title="超标\r\nBcc: evil@x.cn"))
    [(rcpt, raw, over_tls)] = inbox.mails
    assert rcpt == ["wang@xuhui.example.cn"] and over_tls
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "超标 Bcc: evil@x.cn" and msg["Bcc"] is None  # no header injection
    body = msg.get_content()
    assert "徐汇游泳馆" in body and "查看告警：https://landun.example.cn/alerts/7" in body


def test_email_without_starttls_or_to_a_bad_address_is_refused_for_good(tmp_path) -> None:
    from domain.smtp import SmtpServer

    inbox = Inbox()
    server = start_smtp(inbox, None)
    try:
        channel = email.EmailChannel(SmtpServer("127.0.0.1", server.port), "landun@x.cn")
        with pytest.raises(DeliveryFailed) as e:
            channel.send(notice("email", "wang@xuhui.example.cn"))
        assert e.value.reason.startswith("SMTP: SMTPNotSupportedError") and not e.value.retry
        with pytest.raises(DeliveryFailed) as e:
            channel.send(notice("email", "wang@x.cn\r\nRCPT TO:<evil@x.cn>"))
        assert e.value.reason.startswith("not a deliverable e-mail address") and not e.value.retry
    finally:
        server.stop()
    assert inbox.mails == []


# -- webhook -----------------------------------------------------------------------------------


def test_webhook_signs_a_notice_without_payload() -> None:
    got = StandIn(lambda path, query, body: (200, {}))
    try:
        url = got.url + "/hook"
        webhook.WebhookChannel("s3cret").send(notice("webhook", url))
        [(_, _, body)] = got.requests
        doc = json.loads(body)
        assert doc["action"] == "escalated" and doc["notice"]["level"] == 1
        assert doc["notice"]["title"] == "游离性余氯低于限值"
        with pytest.raises(DeliveryFailed, match="not an http"):
            webhook.WebhookChannel("s3cret").send(notice("webhook", "file:///etc/passwd"))
    finally:
        got.close()


# -- settings ----------------------------------------------------------------------------------

NOTIFY = """
[wecom.robots.ops]
key = { env = "LANDUN_TEST_WECOM_KEY" }

[sms]
access_key_id = { env = "LANDUN_TEST_SMS_ID" }
access_key_secret = { file = "SECRET_FILE" }
sign_name = "蓝盾监测"
template_code = "SMS_465000001"
template_params = { site = "site_id", title = "title" }
"""


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch):
    secret = tmp_path / "sms-secret"
    secret.write_text("key-secret\n")
    monkeypatch.setenv("LANDUN_TEST_WECOM_KEY", "k-ops")
    monkeypatch.setenv("LANDUN_TEST_SMS_ID", "LTAI-id")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "notify.toml").write_text(NOTIFY.replace("SECRET_FILE", str(secret)))
    yield etc
    load_settings(None)  # later tests read the packaged files only


def test_notify_toml_turns_channels_on_with_secrets_from_env_and_files(config_dir, tmp_path):
    load_settings(config_dir)
    settings = load_channel_settings()
    assert set(settings.configs) == {"wecom", "sms"}
    store = SqliteStore(tmp_path / "landun.db")
    outbox = build_outbox(settings, store)
    store.close()
    assert outbox.channels["wecom"].keys == {"ops": "k-ops"}
    assert outbox.channels["sms"].provider.secret == "key-secret"


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (('{ env = "LANDUN_TEST_WECOM_KEY" }', '"k-ops"'), "wecom.robots.ops.key",
         "Input should be a valid dictionary"),
        (("LANDUN_TEST_WECOM_KEY", "LANDUN_TEST_UNSET"), "wecom.robots.ops.key",
         "the environment variable LANDUN_TEST_UNSET is not set"),
        (("[sms]", "[pager]"), "pager", "no such channel"),
        (('"title" }', '"password" }'), "sms.template_params.title", "Input should be"),
    ],
)  # fmt: skip
def test_notify_toml_mistakes_fail_at_start_naming_the_key(config_dir, change, key, reason):
    path = config_dir / "notify.toml"
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(SettingsError) as e:
        load_settings(config_dir)
    assert e.value.key == key and reason in e.value.reason
