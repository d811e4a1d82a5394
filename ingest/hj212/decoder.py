"""An HJ 212 packet's readings (ingest.messages.Hj212Message, parsed and mapped to parameters by
the gateway) -> readings, through the same catalogue, registration, range and time checks as MQTT
telemetry (ingest.decode.decode_record)."""

from __future__ import annotations

from domain.model import DATA_FLAGS, Device
from domain.params import Catalogue
from ingest.decode import DecodeLimits, decode_record
from ingest.decoders import Batch
from ingest.messages import Hj212Message, Message

_NO_UNITS: dict[str, str] = {}  # HJ 212 values come in the code's own unit; only ever read


class Hj212Decoder:
    __slots__ = ("catalogue", "limits")

    def __init__(self, catalogue: Catalogue, limits: DecodeLimits) -> None:
        self.catalogue = catalogue
        self.limits = limits

    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        assert isinstance(m, Hj212Message)  # the table routes only the gateway's packets here
        rec = m.record
        reasons = [
            f"{parameter}: data flag {flag!r} is not one of {', '.join(DATA_FLAGS)}"
            for parameter, flag in rec.flags.items()
            if flag not in DATA_FLAGS
        ]
        readings = batch.readings
        before = len(readings)
        fields = (rec.ts_ms, None, rec.values, rec.flags, _NO_UNITS)
        cat, limits = self.catalogue, self.limits
        decode_record(fields, device, device.site_id, cat, m.recv_ms, limits, readings, reasons)
        if reasons:
            del readings[before:]  # a packet with any bad value is refused whole, as MQTT's
            return "; ".join(reasons)
        return None
