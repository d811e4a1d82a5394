"""Connects the HJ 212 gateway to the shared ingest pipeline: the same validation, store and
alerts as MQTT. A logger's packets reach it as typed messages (ingest.messages.Hj212Message),
decoded through the pipeline's table like every other kind."""

from __future__ import annotations

from domain.credentials import verify_secret
from domain.model import DeadLetter
from domain.registry import Registry
from ingest.messages import Hj212Message
from ingest.pipeline import IngestPipeline


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

    def telemetry(self, message: Hj212Message) -> None:
        if not self.pipeline.process([message]):
            raise RuntimeError("ingest is stopping; the logger will resend")

    def dead_letter(self, letter: DeadLetter) -> None:
        if not self.pipeline.refuse(letter):
            raise RuntimeError("ingest is stopping; the logger will resend")
