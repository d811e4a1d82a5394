"""Who is told about alerts: contacts of a site or a jurisdiction (the venue's 负责人, the
hospital's 医废管理员, the section chief, the director), their addresses per channel, the days
they are on call (值班), and what each person chooses to receive.

Checked pydantic models: they are what the API accepts, what the contacts file holds and what the
store keeps (as JSON), so all three are judged by one set of rules."""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from domain.model import AlertFamily, Severity

# The audit trail's actor for the escalation stage's entries (levels reached, notices sent).
# They record notifications, not changes of the alert, so the live stream leaves them out.
ESCALATION_ACTOR = "escalation"

ChannelName = Literal["wecom", "dingtalk", "email", "sms", "webhook"]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

STRICT = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Role = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="e.g. manager")]
DutyDay = Annotated[
    str,
    Field(
        pattern=r"^(mon|tue|wed|thu|fri|sat|sun|20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]))$",
        description="a weekday (mon...sun) or a date (YYYY-MM-DD)",
    ),
]
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
# Robots (企业微信, 钉钉) are named here and configured with their webhook keys and secrets in the
# channel settings, never in a contact.
RobotName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def weekday_name(day: date) -> str:
    return _WEEKDAYS[day.weekday()]


def parse_clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


class Addresses(BaseModel):
    """Where a person is reached, at most one address per channel."""

    model_config = STRICT

    wecom: RobotName | None = None
    dingtalk: RobotName | None = None
    email: (
        Annotated[
            str,
            Field(
                max_length=254,
                pattern=r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){1,8}$",
            ),
        ]
        | None
    ) = None
    # Mainland mobile numbers (11 digits, 1[3-9]...), optionally with +86.
    sms: Annotated[str, Field(pattern=r"^(\+86)?1[3-9][0-9]{9}$")] | None = None
    webhook: Annotated[str, Field(max_length=500, pattern=r"^https?://[!-~]+$")] | None = None

    def items(self) -> list[tuple[ChannelName, str]]:
        return [(k, v) for k in get_args(ChannelName) if (v := getattr(self, k)) is not None]


class QuietHours(BaseModel):
    """Local times between which a person is not disturbed (start > end spans midnight).
    Critical alerts still come through unless `include_critical` is set."""

    model_config = STRICT

    start: ClockTime
    end: ClockTime
    include_critical: StrictBool = False

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
    addresses: Addresses = Field(default_factory=Addresses)
    # Days this contact is on call outside working hours: weekdays (mon...sun) or dates. A duty
    # day runs from the end of its working hours to the start of the next day's.
    on_call: list[DutyDay] = Field(default_factory=list, max_length=400)
    preferences: Preferences = Field(default_factory=Preferences)


class ContactList(BaseModel):
    model_config = STRICT

    contacts: list[Contact] = Field(max_length=100)

    def problem(self) -> str | None:
        """What the schema cannot say: names must differ, duty dates must exist."""
        names = [c.name for c in self.contacts]
        for i, c in enumerate(self.contacts):
            if c.name in names[:i]:
                return f"contacts.{i}.name: {c.name!r} is given to more than one contact"
            for j, day in enumerate(c.on_call):
                if day not in _WEEKDAYS and not _is_date(day):
                    return f"contacts.{i}.on_call.{j}: {day!r} is not a date"
        return None


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


class UserNotify(BaseModel):
    """A Landun user's own addresses and preferences (an inspector is told as a user)."""

    model_config = STRICT

    addresses: Addresses = Field(default_factory=Addresses)
    preferences: Preferences = Field(default_factory=Preferences)


def site_owner(site_id: str) -> str:
    return f"site:{site_id}"


def jurisdiction_owner(code: str) -> str:
    return f"jurisdiction:{code}"


def user_owner(name: str) -> str:
    return f"user:{name}"
