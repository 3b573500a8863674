"""LwM2M enabler versions and protocol defaults (TS Core 1.1/1.2 tables)."""

# Versions the server accepts in the `lwm2m=` registration parameter. Absent means 1.0.
SUPPORTED_VERSIONS: frozenset[str] = frozenset({"1.0", "1.1", "1.2"})

# Registration lifetime when `lt=` is absent (TS Core 6.2.1, Table: Registration parameters).
DEFAULT_LIFETIME = 86400

# Binding when `b=` is absent.
DEFAULT_BINDING = "U"

# How long a queue-mode client stays awake after it sent a message (CoAP MAX_TRANSMIT_WAIT).
QUEUE_AWAKE_S = 93.0
