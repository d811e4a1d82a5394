"""Connects the HJ 212 gateway to the shared ingest pipeline: the same validation, store and
alerts as MQTT. A logger's records become a telemetry message of its device."""

from __future__ import annotations

from domain.credentials import verify_secret
from domain.registry import Registry
from ingest.pipeline import IngestPipeline, RawMessage


class RegistryLookup:
    """MN -> device (called on the loop) and PW check (a slow hash: called on a worker thread),
    answered from the in-memory registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def device_for_mn(self, mn: str) -> str | None:
        return self.registry.by_mn.get(mn)

    def check_password(self, device_id: str, pw: str) -> bool:
        device = self.registry.devices.get(device_id)
        if device is None:
            return False
        # A device registered without a credential is not checked (closed-network deployments
        # where the logger's PW is the factory default); production registries set one.
        return not device.credential_hash or verify_secret(pw, device.credential_hash)


class PipelineSink:
    def __init__(self, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline

    def telemetry(self, device_id: str, records: list[dict], recv_ms: int, raw: bytes) -> None:
        msg = RawMessage(_topic(device_id), raw, recv_ms, source="hj212", doc=records)
        if not self.pipeline.process([msg]):
            raise RuntimeError("ingest is stopping; the logger will resend")

    def dead_letter(self, reason: str, raw: bytes, device_id: str | None, recv_ms: int) -> None:
        msg = RawMessage(_topic(device_id), raw, recv_ms, source="hj212")
        if not self.pipeline.dead_letter(msg, device_id, reason):
            raise RuntimeError("ingest is stopping; the logger will resend")


def _topic(device_id: str | None) -> str:
    """The MQTT topic the logger's data would have had, so dead letters read alike."""
    return f"landun/v1/devices/{device_id or 'unknown'}/telemetry"
