"""Vendor conformance testing: test catalogue, vendor profiles, simulated systems, runner, matrix.

The runner judges vendors with the relay's own engine (hub.validation, hub.messages.apprec,
hub.security, hub.ebxml): there is one rule set, and a vendor is approved by the same code that
would reject its messages in production.
"""
