"""CoAP over DTLS 1.2 with pre-shared keys: ``engine`` (tinydtls sessions, sans-IO) and ``coaps``
(aiocoap message interfaces for the server and the device side)."""
