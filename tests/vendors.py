"""Local stand-ins for the notification vendors, which cannot run here: real HTTP servers on
ephemeral ports that check each request as the vendor documents it (signature, required
fields, length limits) and answer with the vendor's own error codes. Each checks with code of
its own, written from the vendor's documentation, not with the channel module's code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

Answer = tuple[int, dict]


class StandIn:
    """A vendor on 127.0.0.1: `url` is its base; `requests` what it was sent; `hold` (when
    set) makes every request wait for `release`."""

    def __init__(self, handle: Callable[[str, dict[str, str], bytes], Answer]) -> None:
        self.handle = handle
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        self.release.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(size, 1 << 20))
                split = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                outer.requests.append((split.path, query, body))
                outer.release.wait(30)
                status, answer = outer.handle(split.path, query, body)
                data = json.dumps(answer, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Wecom:
    """群机器人 webhook: the key names a robot; markdown content at most 4096 UTF-8 bytes."""

    def __init__(self, keys: set[str]) -> None:
        self.keys = keys
        self.contents: dict[str, list[str]] = {}
        self.errcodes: list[int] = []  # answered (in order) before the requests succeed
        self.down: set[str] = set()  # keys whose robot answers HTTP 503 once `up_again` is set
        self.up_again = threading.Event()
        self.stand_in = StandIn(self.handle)

    def handle(self, path: str, query: dict[str, str], body: bytes) -> Answer:
        key = query.get("key", "")
        if key in self.down:
            self.up_again.wait(30)
            return 503, {}
        if path != "/cgi-bin/webhook/send" or key not in self.keys:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
        msg = json.loads(body)
        content = msg.get("markdown", {}).get("content")
        if msg.get("msgtype") != "markdown" or not isinstance(content, str) or not content:
            return 200, {"errcode": 44004, "errmsg": "text content is empty"}
        if len(content.encode()) > 4096:
            return 200, {"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"}
        if self.errcodes:
            code = self.errcodes.pop(0)
            return 200, {"errcode": code, "errmsg": "api freq out of limit"}
        self.contents.setdefault(key, []).append(content)
        return 200, {"errcode": 0, "errmsg": "ok"}


class Dingtalk:
    """Custom robot with 加签: timestamp (ms, within an hour) and sign checked."""

    def __init__(self, robots: dict[str, str]) -> None:  # access token -> secret
        self.robots = robots
        self.messages: list[dict] = []
        self.stand_in = StandIn(self.handle)

    def handle(self, path: str, query: dict[str, str], body: bytes) -> Answer:
        token = query.get("access_token", "")
        if path != "/robot/send" or token not in self.robots:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}
        secret = self.robots[token]
        ts = query.get("timestamp", "")
        if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3_600_000:
            return 200, {"errcode": 310000, "errmsg": "invalid timestamp"}
        want = base64.b64encode(
            hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        ).decode()
        # parse_qs decoded the query once: the sign arrives as the base64 text.
        if query.get("sign") != want:
            return 200, {"errcode": 310000, "errmsg": "sign not match"}
        msg = json.loads(body)
        md = msg.get("markdown", {})
        if msg.get("msgtype") != "markdown" or not md.get("title") or not md.get("text"):
            return 200, {"errcode": 40035, "errmsg": "缺少参数 markdown"}
        self.messages.append(md)
        return 200, {"errcode": 0, "errmsg": "ok"}


def pop_encode(text: str) -> str:
    return quote(text, safe="-_.~")


class AliyunSms:
    """Dysmsapi SendSms (RPC, HMAC-SHA1): one signature name and template with variables."""

    REQUIRED = (
        "AccessKeyId", "Action", "Format", "PhoneNumbers", "RegionId", "Signature",
        "SignatureMethod", "SignatureNonce", "SignatureVersion", "SignName", "TemplateCode",
        "Timestamp", "Version",
    )  # fmt: skip

    def __init__(self, key_id: str, secret: str, sign_name: str, template: str, variables):
        self.key_id, self.secret = key_id, secret
        self.sign_name, self.template, self.variables = sign_name, template, set(variables)
        self.nonces: set[str] = set()
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.codes: list[str] = []  # answered (in order) before the requests succeed
        self.stand_in = StandIn(self.handle)

    def handle(self, path: str, query: dict[str, str], body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        missing = [k for k in self.REQUIRED if k not in form]
        if missing:
            return 400, {"Code": "MissingParameter", "Message": f"{missing[0]} is mandatory"}
        if form["AccessKeyId"] != self.key_id:
            return 404, {"Code": "InvalidAccessKeyId.NotFound", "Message": "not found"}
        params = {k: v for k, v in form.items() if k != "Signature"}
        canonical = "&".join(f"{pop_encode(k)}={pop_encode(v)}" for k, v in sorted(params.items()))
        to_sign = "POST&%2F&" + pop_encode(canonical)
        digest = hmac.new(f"{self.secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
        if form["Signature"] != base64.b64encode(digest).decode():
            return 400, {"Code": "SignatureDoesNotMatch", "Message": "signature mismatch"}
        if form["SignatureNonce"] in self.nonces:
            return 400, {"Code": "SignatureNonceUsed", "Message": "nonce used"}
        self.nonces.add(form["SignatureNonce"])
        if (form["Action"], form["Version"], form["SignatureMethod"]) != (
            "SendSms",
            "2017-05-25",
            "HMAC-SHA1",
        ):
            return 400, {"Code": "InvalidParameter", "Message": "action or version"}
        try:
            time.strptime(form["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return 400, {"Code": "InvalidTimeStamp.Format", "Message": "timestamp"}
        phone = form["PhoneNumbers"].removeprefix("+86").removeprefix("0086")
        if len(phone) != 11 or not phone.isdigit() or phone[0] != "1":
            return 200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号"}
        if form["SignName"] != self.sign_name:
            return 200, {"Code": "isv.SMS_SIGNATURE_ILLEGAL", "Message": "签名不合法"}
        if form["TemplateCode"] != self.template:
            return 200, {"Code": "isv.SMS_TEMPLATE_ILLEGAL", "Message": "模板不合法"}
        values = json.loads(form.get("TemplateParam") or "{}")
        if set(values) != self.variables:
            return 200, {"Code": "isv.TEMPLATE_MISSING_PARAMETERS", "Message": "模板缺少变量"}
        if any(not 1 <= len(str(v)) <= 35 for v in values.values()):
            return 200, {"Code": "isv.PARAM_LENGTH_LIMIT", "Message": "参数超出长度限制"}
        if self.codes:
            return 200, {"Code": self.codes.pop(0), "Message": "触发分钟级流控Permits:1"}
        self.sent.append((phone, values))
        return 200, {
            "Code": "OK",
            "Message": "OK",
            "BizId": "9006197469364984",
            "RequestId": "F655A8D5",
        }
