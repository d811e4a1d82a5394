"""Who a policy's target means for one alert: inspectors are users of the site's jurisdiction;
the site's and the jurisdiction's contacts come from the store where edited through the API,
else from the contacts file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

from alerts.escalation.policy import ContactsFile
from domain.model import Site
from domain.notify import (
    Contact,
    ContactList,
    Preferences,
    UserNotify,
    jurisdiction_owner,
    site_owner,
    user_owner,
    weekday_name,
)
from store.base import AccountStore, NoticeStore


class PeopleStore(NoticeStore, AccountStore, Protocol):
    """Where people come from: the contacts and settings edited through the API, the users."""


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    addresses: dict[str, str]
    preferences: Preferences


def stored_contacts(
    store: NoticeStore, file: ContactsFile, owner: str
) -> tuple[list[Contact], Literal["store", "file", "none"]]:
    """An owner's contacts and where they come from ("store", "file" or "none")."""
    doc = store.notify_settings([owner]).get(owner)
    if doc is not None:
        return ContactList.model_validate_json(doc).contacts, "store"
    kind, _, key = owner.partition(":")
    table = file.sites if kind == "site" else file.jurisdictions
    if key in table:
        return table[key].contacts, "file"
    return [], "none"


def stored_user_notify(store: NoticeStore, name: str) -> UserNotify | None:
    doc = store.notify_settings([user_owner(name)]).get(user_owner(name))
    return None if doc is None else UserNotify.model_validate_json(doc)


def people_for(
    store: PeopleStore, file: ContactsFile, target: str, site: Site, duty: date
) -> list[Person]:
    """The people a target names for this site on this duty day, in a stable order."""
    if target == "inspectors":
        return _inspectors(store, site.jurisdiction)
    kind, _, role = target.partition(":")
    if kind == "site":
        contacts, _ = stored_contacts(store, file, site_owner(site.id))
        return [_person(c) for c in contacts if not role or c.role == role]
    contacts, _ = stored_contacts(store, file, jurisdiction_owner(site.jurisdiction))
    if kind == "on_call":
        days = {duty.isoformat(), weekday_name(duty)}
        return [_person(c) for c in contacts if days & set(c.on_call)]
    return [_person(c) for c in contacts if c.role == role]


def _person(c: Contact) -> Person:
    return Person(c.name, dict(c.addresses.items()), c.preferences)


def _inspectors(store: PeopleStore, jurisdiction: str) -> list[Person]:
    users = [
        u.user.name
        for u in store.list_users()
        if not u.disabled and u.user.role == "inspector" and jurisdiction in u.user.jurisdictions
    ]
    docs = store.notify_settings([user_owner(n) for n in users])
    out = []
    for name in users:
        doc = docs.get(user_owner(name))
        settings = UserNotify() if doc is None else UserNotify.model_validate_json(doc)
        out.append(Person(name, dict(settings.addresses.items()), settings.preferences))
    return out
