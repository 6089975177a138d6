"""hub: routing and conformance hub for Norwegian health e-messages (KITH XML over ebXML)."""

__version__ = "0.1.0"
