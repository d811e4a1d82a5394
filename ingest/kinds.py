"""The kinds of message Landun ingests, one entry each: a new kind is a decoder module and a line
here. Events are recorded in the ledger given for their kind; a kind whose ledger is not given
is not taken (its messages are dead letters saying so)."""

from __future__ import annotations

from domain.params import Catalogue
from domain.tableware import LINE_CONTROLLER, LineEvent
from domain.tanks import TANK_LOG, TankEvent
from domain.waste import WASTE_SCANNER, WasteEvent
from ingest.decode import DecodeLimits, StatusDecoder, TelemetryDecoder
from ingest.decoders import DecoderTable, EventLedger
from ingest.events import EventDecoder, decode_waste_item
from ingest.hj212.decoder import Hj212Decoder
from ingest.line_events import decode_line_item
from ingest.messages import HJ212_ROUTE
from ingest.tank_events import decode_tank_item


def standard_decoders(
    catalogue: Catalogue,
    limits: DecodeLimits | None = None,
    *,
    waste: EventLedger[WasteEvent] | None = None,
    lines: EventLedger[LineEvent] | None = None,
    tanks: EventLedger[TankEvent] | None = None,
) -> DecoderTable:
    limits = limits or DecodeLimits()
    table = DecoderTable()
    table.add("telemetry", TelemetryDecoder(catalogue, limits))
    table.add("status", StatusDecoder(limits))
    table.add(HJ212_ROUTE, Hj212Decoder(catalogue, limits))
    if waste is not None:
        table.add("events", EventDecoder(decode_waste_item, waste, limits), WASTE_SCANNER)
    if lines is not None:
        table.add("events", EventDecoder(decode_line_item, lines, limits), LINE_CONTROLLER)
    if tanks is not None:
        table.add("events", EventDecoder(decode_tank_item, tanks, limits), TANK_LOG)
    return table
