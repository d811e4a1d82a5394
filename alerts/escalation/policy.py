"""Escalation policies (escalation.toml), holiday calendars (holidays/<name>.toml) and the
contacts file (contacts.toml), checked at start like every settings file: a wrong one fails with
its file, key and reason. `Schedule` answers the two questions of time: is this instant inside
working hours, and whose on-call duty day is it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from alerts.settings_files import STRICT, SettingsError, checked, read_toml
from domain.model import Severity
from domain.notify import ClockTime, ContactList, parse_clock, weekday_name
from domain.registry import Registry
from domain.timeutil import check_timezone

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_ROLE = r"[a-z][a-z0-9_]{0,31}"
Target = Annotated[
    str, Field(pattern=rf"^(inspectors|on_call|site|site:{_ROLE}|jurisdiction:{_ROLE})$")
]
Minutes = Annotated[float, Field(ge=0, le=7 * 24 * 60)]
# A calendar's name is part of a file name: letters, digits and dashes only.
CalendarName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
PolicyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
JurisdictionCode = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Level:
    __pydantic_config__ = STRICT

    after_min: Minutes
    notify: Annotated[tuple[Target, ...], Field(min_length=1, max_length=10)]
    after_min_critical: Minutes | None = None  # None: as after_min
    notify_off_hours: Annotated[tuple[Target, ...], Field(max_length=10)] | None = None

    def delay_ms(self, severity: str) -> int:
        minutes = self.after_min
        if severity == Severity.CRITICAL and self.after_min_critical is not None:
            minutes = self.after_min_critical
        return int(minutes * MINUTE_MS)

    def targets(self, working: bool) -> tuple[str, ...]:
        if working or self.notify_off_hours is None:
            return self.notify
        return self.notify_off_hours


@dataclass(frozen=True, slots=True)
class WorkingHours:
    __pydantic_config__ = STRICT

    days: Annotated[tuple[Weekday, ...], Field(max_length=7)] = ("mon", "tue", "wed", "thu", "fri")
    start: ClockTime = "08:30"
    end: ClockTime = "17:30"

    def __post_init__(self) -> None:
        if parse_clock(self.start) >= parse_clock(self.end):
            raise ValueError(f"start {self.start} is not before end {self.end}")


@dataclass(frozen=True, slots=True)
class Policy:
    __pydantic_config__ = STRICT

    levels: Annotated[tuple[Level, ...], Field(min_length=1, max_length=10)]
    working_hours: WorkingHours = field(default_factory=WorkingHours)
    calendars: Annotated[tuple[CalendarName, ...], Field(max_length=20)] = ()

    def __post_init__(self) -> None:
        for severity in Severity:
            delays = [lv.delay_ms(severity) for lv in self.levels]
            if delays != sorted(delays):
                raise ValueError(f"levels must come in order of their delays ({severity} alerts)")


@dataclass(frozen=True, slots=True)
class Calendar:
    """One year's public holidays and the weekend days worked instead (调休)."""

    __pydantic_config__ = STRICT

    year: int
    holidays: Annotated[tuple[date, ...], Field(max_length=366)]
    workdays: Annotated[tuple[date, ...], Field(max_length=366)]
    source: str
    confidence: str

    def __post_init__(self) -> None:
        for day in (*self.holidays, *self.workdays):
            if day.year != self.year:
                raise ValueError(f"{day} is not in {self.year}")
        both = sorted(set(self.holidays) & set(self.workdays))
        if both:
            raise ValueError(f"{both[0]} is both a holiday and a working day")


@dataclass(frozen=True, slots=True)
class EscalationFile:
    __pydantic_config__ = STRICT

    default_policy: PolicyName
    policies: Annotated[dict[PolicyName, Policy], Field(min_length=1, max_length=100)]
    jurisdictions: Annotated[dict[JurisdictionCode, PolicyName], Field(max_length=10_000)] = field(
        default_factory=dict
    )
    timezone: str = "Asia/Shanghai"
    source: str = ""
    confidence: str = ""

    def __post_init__(self) -> None:
        check_timezone(self.timezone)
        if self.default_policy not in self.policies:
            raise ValueError(f"default_policy {self.default_policy!r} is not among the policies")
        for code, name in self.jurisdictions.items():
            if name not in self.policies:
                raise ValueError(f"jurisdiction {code}: no policy {name!r}")


class ContactsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: dict[Annotated[str, Field(max_length=64)], ContactList] = Field(max_length=100_000)
    jurisdictions: dict[JurisdictionCode, ContactList] = Field(max_length=10_000)
    source: str = ""
    confidence: str = ""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A policy's working hours in its zone, with its holiday calendars."""

    hours: WorkingHours
    zone: ZoneInfo
    holidays: frozenset[date]
    workdays: frozenset[date]

    def local(self, at_ms: int) -> datetime:
        return datetime.fromtimestamp(at_ms / 1000, self.zone)

    def working_day(self, day: date) -> bool:
        if day in self.holidays:
            return False
        return day in self.workdays or weekday_name(day) in self.hours.days

    def is_working(self, at_ms: int) -> bool:
        t = self.local(at_ms)
        start, end = parse_clock(self.hours.start), parse_clock(self.hours.end)
        return self.working_day(t.date()) and start <= t.time() < end

    def duty_day(self, at_ms: int) -> date:
        """The day whose on-call duty covers this instant: a duty day runs from its working
        hours' start to the next day's (so 02:00 on Tuesday is Monday's duty)."""
        start = parse_clock(self.hours.start)
        t = self.local(at_ms) - timedelta(hours=start.hour, minutes=start.minute)
        return t.date()


@dataclass(frozen=True)
class EscalationSettings:
    """The policies with their calendars, and the contacts file, as loaded at start."""

    file: EscalationFile
    calendars: dict[str, Calendar]
    contacts: ContactsFile

    @classmethod
    def load(cls, registry: Registry | None = None) -> EscalationSettings:
        """The config dir's files or the packaged ones; SettingsError if one is wrong. With a
        registry, the contacts file may only name its sites."""
        where, doc = read_toml("escalation.toml")
        file = checked(EscalationFile, doc, where)
        calendars = {}
        for name in sorted({c for p in file.policies.values() for c in p.calendars}):
            try:
                cal_where, cal_doc = read_toml(f"holidays/{name}.toml")
            except FileNotFoundError:
                raise SettingsError(
                    where, "calendars", f"no calendar holidays/{name}.toml"
                ) from None
            calendars[name] = checked(Calendar, cal_doc, cal_where)
        contacts_where, contacts_doc = read_toml("contacts.toml")
        contacts = checked(ContactsFile, contacts_doc, contacts_where)
        for kind, table in (("sites", contacts.sites), ("jurisdictions", contacts.jurisdictions)):
            for owner, contact_list in table.items():
                problem = contact_list.problem()
                if problem:
                    key, _, reason = problem.partition(": ")
                    raise SettingsError(contacts_where, f"{kind}.{owner}.{key}", reason)
        if registry is not None:
            unknown = sorted(set(contacts.sites) - set(registry.sites))
            if unknown:
                raise SettingsError(contacts_where, f"sites.{unknown[0]}", "no such site")
        return cls(file, calendars, contacts)

    def policy_for(self, jurisdiction: str) -> Policy:
        name = self.file.jurisdictions.get(jurisdiction, self.file.default_policy)
        return self.file.policies[name]

    @cached_property
    def _schedules(self) -> dict[int, Schedule]:
        zone = ZoneInfo(self.file.timezone)
        out = {}
        for policy in self.file.policies.values():
            cals = [self.calendars[c] for c in policy.calendars]
            out[id(policy)] = Schedule(
                policy.working_hours,
                zone,
                frozenset(d for c in cals for d in c.holidays),
                frozenset(d for c in cals for d in c.workdays),
            )
        return out

    def schedule(self, policy: Policy) -> Schedule:
        return self._schedules[id(policy)]
