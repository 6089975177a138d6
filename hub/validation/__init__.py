"""Schema registry, business rules and the validation verdict for KITH messages."""
