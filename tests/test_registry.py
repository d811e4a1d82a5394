"""The device registry: identity, sites, HJ 212 MNs."""

from __future__ import annotations

import pytest

from domain.model import Device, Site, SiteKind
from domain.registry import Registry


def registry() -> Registry:
    reg = Registry()
    reg.add_site(Site("s1", "Pool", SiteKind.POOL, "310104"))
    return reg


def test_a_device_whose_mn_changes_gives_the_old_mn_up():
    reg = registry()
    reg.add_device(Device("a", "s1", "hj212_logger", (), mn="MN-1"))
    reg.add_device(Device("a", "s1", "hj212_logger", (), mn="MN-2"))
    assert reg.by_mn == {"MN-2": "a"}
    reg.add_device(Device("b", "s1", "hj212_logger", (), mn="MN-1"))  # free again
    assert reg.by_mn == {"MN-2": "a", "MN-1": "b"}


def test_an_mn_belongs_to_one_device_and_a_device_to_a_known_site():
    reg = registry()
    reg.add_device(Device("a", "s1", "hj212_logger", (), mn="MN-1"))
    with pytest.raises(ValueError, match="MN MN-1 already belongs to a"):
        reg.add_device(Device("b", "s1", "hj212_logger", (), mn="MN-1"))
    with pytest.raises(ValueError, match="unknown site s9"):
        reg.add_device(Device("c", "s9", "pool_analyzer", ()))
