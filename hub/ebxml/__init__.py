"""ebXML Messaging Service 2.0 as the Norwegian framework uses it (HIS 1037, HITS 1171/1172, HISD 1209).

Protocol logic only: envelopes, signals, MIME packaging, envelope signatures, CPAs, duplicate elimination
and the `Msh` that ties them together. Transports (hub.transport) only move bytes.
"""
