"""The relay: intake, checks, routing, delivery and the message lifecycle (see docs/relay.md)."""
