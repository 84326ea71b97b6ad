"""Alarm panels: the SIA DC-09 codec, the receiver (TCP and UDP), heartbeat supervision."""
