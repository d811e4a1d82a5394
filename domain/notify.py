"""Who is told about alerts: contacts of a site or a jurisdiction (the venue's 负责人, the
hospital's 医废管理员, the section chief, the director), their addresses per channel, the days
they are on call (值班), and what each person chooses to receive.

Checked pydantic models: they are what the API accepts, what the contacts file holds and what the
store keeps (as JSON), so all three are judged by one set of rules."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from domain.model import AlertFamily, Severity

ChannelName = Literal["wecom", "dingtalk", "email", "sms", "webhook"]

# What an address looks like per channel. Robots (企业微信, 钉钉) are named here and configured
# with their webhook keys and secrets in the channel settings, never in a contact.
_ADDRESS = {
    "wecom": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
    "dingtalk": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
    "email": re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){1,8}"),
    # Mainland mobile numbers (11 digits, 1[3-9]...), optionally with +86.
    "sms": re.compile(r"(\+86)?1[3-9][0-9]{9}"),
    "webhook": re.compile(r"https?://[!-~]{1,500}"),
}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

STRICT = ConfigDict(extra="forbid", frozen=True)


def _printable(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("control characters are not allowed")
    return text


def _duty_day(text: str) -> str:
    if text in _WEEKDAYS:
        return text
    try:
        date.fromisoformat(text)
    except ValueError:
        days = ", ".join(_WEEKDAYS)
        raise ValueError(f"{text!r} is neither a weekday ({days}) nor YYYY-MM-DD") from None
    if len(text) != 10:
        raise ValueError(f"{text!r}: write dates as YYYY-MM-DD")
    return text


Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
Role = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="e.g. manager")]
DutyDay = Annotated[str, Field(max_length=10), AfterValidator(_duty_day)]
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


def weekday_name(day: date) -> str:
    return _WEEKDAYS[day.weekday()]


def parse_clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _addresses(value: dict[str, str]) -> dict[str, str]:
    for channel, address in value.items():
        if len(address) > 512 or not _ADDRESS[channel].fullmatch(address):
            raise ValueError(f"{channel}: {address[:80]!r} is not a valid {channel} address")
    return value


Addresses = Annotated[dict[ChannelName, str], AfterValidator(_addresses)]


class QuietHours(BaseModel):
    """Local times between which a person is not disturbed (start > end spans midnight).
    Critical alerts still come through unless `include_critical` is set."""

    model_config = STRICT

    start: ClockTime
    end: ClockTime
    include_critical: bool = False

    def covers(self, local: time) -> bool:
        start, end = parse_clock(self.start), parse_clock(self.end)
        if start <= end:
            return start <= local < end
        return local >= start or local < end


class Preferences(BaseModel):
    """What a person chooses to receive; empty lists mean every family or severity."""

    model_config = STRICT

    families: list[AlertFamily] = Field(default_factory=list, max_length=len(AlertFamily))
    severities: list[Severity] = Field(default_factory=list, max_length=len(Severity))
    quiet_hours: QuietHours | None = None

    def refusal(self, family: str, severity: str, local: time) -> str | None:
        """Why this person does not get a notice now, or None when they do."""
        if self.families and family not in self.families:
            return f"family {family} not chosen"
        if self.severities and severity not in self.severities:
            return f"severity {severity} not chosen"
        quiet = self.quiet_hours
        if quiet is None or not quiet.covers(local):
            return None
        if severity == Severity.CRITICAL and not quiet.include_critical:
            return None  # quiet hours never hold back a critical alert unless asked to
        return f"quiet hours {quiet.start}-{quiet.end}"


class Contact(BaseModel):
    """A person or group told about a site's or a jurisdiction's alerts."""

    model_config = STRICT

    name: Name
    role: Role
    addresses: Addresses = Field(min_length=1)
    # Days this contact is on call outside working hours: weekdays (mon...sun) or dates. A duty
    # day runs from the end of its working hours to the start of the next day's.
    on_call: list[DutyDay] = Field(default_factory=list, max_length=400)
    preferences: Preferences = Field(default_factory=Preferences)


class ContactList(BaseModel):
    model_config = STRICT

    contacts: list[Contact] = Field(max_length=100)

    @model_validator(mode="after")
    def _unique_names(self) -> ContactList:
        names = [c.name for c in self.contacts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"contact names must be unique: {', '.join(twice)} twice")
        return self


class UserNotify(BaseModel):
    """A Landun user's own addresses and preferences (an inspector is told as a user)."""

    model_config = STRICT

    addresses: Addresses = Field(default_factory=dict)
    preferences: Preferences = Field(default_factory=Preferences)


def site_owner(site_id: str) -> str:
    return f"site:{site_id}"


def jurisdiction_owner(code: str) -> str:
    return f"jurisdiction:{code}"


def user_owner(name: str) -> str:
    return f"user:{name}"
