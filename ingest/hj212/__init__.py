"""HJ 212 ingest: the TCP gateway and its hand-over to the pipeline (the codec and the code map
are in domain/hj212/)."""

from ingest.hj212.gateway import DeviceLookup, GatewaySink, Hj212Gateway, packet_to_record

__all__ = ["DeviceLookup", "GatewaySink", "Hj212Gateway", "packet_to_record"]
