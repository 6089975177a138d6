"""KITH message families: what each is, where it keeps its parties, how to parse and build it."""
