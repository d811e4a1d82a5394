"""Inspector actions when the alert engine runs in other processes (`landun api`): the action is
recorded in the store, the alert worker holding the alert's partition applies it with the
engine's own rules (alerts/feed.py), and the API waits for the outcome. Limits are looked up
here from the same profiles the engine uses."""

from __future__ import annotations

import time
from typing import Protocol

from domain.limits import Limit, Profile, limits_for_site
from domain.model import Alert
from domain.registry import Registry
from store.base import AlertReader
from store.feed import SITE_EDITED, partition_of


class ActionPending(TimeoutError):
    """Recorded, but no alert worker applied it in time (none running, or taking over)."""


class ActionStore(AlertReader, Protocol):
    """The alerts, and the actions recorded for the alert workers (store.postgres)."""

    def add_action(
        self, part: int, alert_id: int, action: str, actor: str, comment: str
    ) -> int: ...

    def action_outcome(self, action_id: int) -> tuple[bool, str | None]: ...


class StoredActions:
    """What the API asks of the engine (api.context.AppContext.engine), through the store."""

    def __init__(
        self,
        store: ActionStore,
        registry: Registry,
        profiles: dict[str, Profile],
        partitions: int,
        wait_s: float = 10.0,
        poll_s: float = 0.05,
    ) -> None:
        self.store = store
        self.registry = registry
        self.profiles = profiles
        self.partitions = partitions
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._limits: dict[str, dict[str, Limit]] = {}

    def site_limits(self, site_id: str) -> dict[str, Limit]:
        limits = self._limits.get(site_id)
        if limits is None:
            limits = self._limits[site_id] = limits_for_site(
                self.registry.sites[site_id], self.profiles
            )
        return limits

    def use_registry(self, registry: Registry) -> None:
        """A registry reloaded after an edit elsewhere (api.registry_reload): limits are looked
        up again from it."""
        self.registry = registry
        self._limits = {}

    def forget_limits(self, site_id: str) -> None:
        """The site was edited: the alert worker holding it rebuilds its partition with the
        stored edits (alerts/feed.py)."""
        self._limits.pop(site_id, None)
        part = partition_of(site_id, self.partitions)
        self.store.add_action(part, 0, SITE_EDITED, "api", site_id)

    def acknowledge(self, alert_id: int, actor: str, comment: str = "") -> Alert:
        return self._act(alert_id, "acknowledged", actor, comment)

    def resolve(self, alert_id: int, actor: str, comment: str = "") -> Alert:
        return self._act(alert_id, "resolved", actor, comment)

    def comment(self, alert_id: int, actor: str, comment: str) -> Alert:
        return self._act(alert_id, "commented", actor, comment)

    def _act(self, alert_id: int, action: str, actor: str, comment: str) -> Alert:
        alert = self.store.get_alert(alert_id)
        if alert is None:
            raise KeyError(f"alert {alert_id} does not exist")
        part = partition_of(alert.site_id, self.partitions)
        action_id = self.store.add_action(part, alert_id, action, actor, comment)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            done, error = self.store.action_outcome(action_id)
            if done:
                if error is None:
                    return self.store.get_alert(alert_id) or alert
                kind, _, why = error.partition(": ")
                raise KeyError(why) if kind == "not found" else ValueError(why)
            time.sleep(self.poll_s)
        raise ActionPending(
            f"the {action} of alert {alert_id} is recorded; no alert worker has applied it"
            f" within {self.wait_s:g} s (is `landun alerts` running?); it is applied when one"
            " takes the alert's partition"
        )
