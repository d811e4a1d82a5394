"""Site and device edits made through the API, kept in the store (RegistryStore: tables
site_edits and device_edits) and laid over the registry file by every process at start (landun
run, and each of the separate roles), so they survive a restart."""

from __future__ import annotations

import json
import logging

from domain.model import Device, Site
from domain.registry import (
    Registry,
    device_from_dict,
    device_to_dict,
    site_from_dict,
    site_to_dict,
)
from store.base import RegistryStore

log = logging.getLogger("landun.store")


def save_site(store: RegistryStore, site: Site) -> None:
    store.save_site_edit(site.id, json.dumps(site_to_dict(site), ensure_ascii=False))


def save_device(store: RegistryStore, device: Device) -> None:
    store.save_device_edit(device.id, json.dumps(device_to_dict(device)))


def apply_stored_edits(store: RegistryStore, registry: Registry) -> None:
    """Lay the API's saved edits over a registry loaded from its file."""
    for site_id, text in store.site_edits().items():
        try:
            site = site_from_dict(json.loads(text))
        except ValueError as exc:  # saved before sites were checked as they are now
            log.warning("saved edit of site %s left out: %s", site_id, exc)
            continue
        registry.add_site(site)
    for text in store.device_edits().values():
        registry.add_device(device_from_dict(json.loads(text)))
