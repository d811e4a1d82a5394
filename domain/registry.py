"""Sites and devices: who may publish, and to which site a device's data belongs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from domain.kinds import check_kind, site_kinds
from domain.model import Device, Site
from domain.tableware import check_line_attributes
from domain.timeutil import check_timezone


@dataclass(slots=True)
class Registry:
    sites: dict[str, Site] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    by_mn: dict[str, str] = field(default_factory=dict)

    def site_of(self, device_id: str) -> Site | None:
        dev = self.devices.get(device_id)
        return self.sites.get(dev.site_id) if dev else None

    def devices_of(self, site_id: str) -> list[Device]:
        return [d for d in self.devices.values() if d.site_id == site_id]

    def add_site(self, site: Site) -> None:
        self.sites[site.id] = site

    def add_device(self, device: Device) -> None:
        if device.site_id not in self.sites:
            raise ValueError(f"device {device.id}: unknown site {device.site_id}")
        check_line_attributes(device)
        if device.mn is not None:
            other = self.by_mn.get(device.mn)
            if other is not None and other != device.id:
                raise ValueError(f"device {device.id}: MN {device.mn} already belongs to {other}")
        old = self.devices.get(device.id)
        if old is not None and old.mn is not None:
            self.by_mn.pop(old.mn, None)  # a device whose MN changed gives the old one up
        if device.mn is not None:
            self.by_mn[device.mn] = device.id
        self.devices[device.id] = device


def site_from_dict(s: dict) -> Site:
    kind = check_kind(s["kind"], s.get("subtype", ""))
    return Site(
        id=s["id"],
        name=s["name"],
        kind=kind,
        jurisdiction=s["jurisdiction"],
        address=s.get("address", ""),
        profile=s.get("profile") or site_kinds()[kind].default_profile,
        timezone=check_timezone(s.get("timezone", "Asia/Shanghai")),
        latitude=s.get("latitude"),
        longitude=s.get("longitude"),
        limit_overrides=s.get("overrides", {}),
        subtype=s.get("subtype", ""),
    )


def site_to_dict(s: Site) -> dict:
    return {
        "id": s.id,
        "name": s.name,
        "kind": str(s.kind),
        "jurisdiction": s.jurisdiction,
        "address": s.address,
        "profile": s.profile,
        "timezone": s.timezone,
        "latitude": s.latitude,
        "longitude": s.longitude,
        "overrides": s.limit_overrides,
        "subtype": s.subtype,
    }


def device_from_dict(d: dict) -> Device:
    return Device(
        id=d["id"],
        site_id=d["site"],
        kind=d["kind"],
        parameters=tuple(d.get("parameters", ())),
        interval_s=int(d.get("interval_s", 60)),
        credential_hash=d.get("credential_hash", ""),
        mn=d.get("mn"),
        attributes=dict(d.get("attributes", {})),
    )


def device_to_dict(d: Device) -> dict:
    return {
        "id": d.id,
        "site": d.site_id,
        "kind": d.kind,
        "parameters": list(d.parameters),
        "interval_s": d.interval_s,
        "credential_hash": d.credential_hash,
        "mn": d.mn,
        "attributes": d.attributes,
    }


def parse_registry(doc: dict) -> Registry:
    reg = Registry()
    for s in doc.get("sites", []):
        reg.add_site(site_from_dict(s))
    for d in doc.get("devices", []):
        reg.add_device(device_from_dict(d))
    return reg


def load_registry(path: Path) -> Registry:
    return parse_registry(tomllib.loads(path.read_text("utf-8")))
