"""tinydtls' per-handshake user parameters, which the DTLSSocket binding does not expose.

tinydtls asks ``dtls_handler_t.get_user_parameters`` for each handshake's parameters; with no
callback installed (DTLSSocket installs none) its defaults apply, and they *force* the RFC 5746
renegotiation indication: a ClientHello with neither the ``renegotiation_info`` extension nor the
``TLS_EMPTY_RENEGOTIATION_INFO_SCSV`` suite gets a fatal handshake_failure. Clients built on
older tinydtls — Eclipse Wakaama's ``lwm2mclient_tinydtls``, and firmware using it — send
neither, so they could not connect at all. tinydtls never renegotiates (and RFC 7925 section 15
has CoAP endpoints refuse renegotiation), so the indication protects nothing here;
``relax_renegotiation_info`` installs a callback that clears that one flag and keeps every other
default (the extended master secret of RFC 7627 stays forced, the cipher suites stay tinydtls').

How, given no API: a Cython ``DTLS`` object holds its ``dtls_context_t *`` right after the object
header and its ``dtls_handler_t`` right after that pointer; the context points back at the
object (``app``) and at the handler (``h``). Each of those is checked before anything is written
(the context's ``app`` is the object, its ``h`` is the object's handler field, the first three
callbacks are set and the fourth, ``get_user_parameters``, is empty); if any check fails nothing
is written and the function returns False (the server then simply keeps tinydtls' default).
The callback is one module-level ctypes function, never freed.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

POINTER = ctypes.sizeof(ctypes.c_void_p)
OBJECT_HEADER = 2 * POINTER            # ob_refcnt, ob_type
HANDLER_SLOT = 3                        # write, read, event, get_user_parameters
MAX_CIPHER_SUITES = 4                   # DTLS_MAX_CIPHER_SUITES in tinydtls' crypto.h
FLAGS_OFFSET = (MAX_CIPHER_SUITES + 1) * ctypes.sizeof(ctypes.c_int)  # after cipher_suites[]
FORCE_RENEGOTIATION_INFO = 1 << 1       # bit 0: force_extended_master_secret


# void (*get_user_parameters)(dtls_context_t *, session_t *, dtls_user_parameters_t *)
_GetUserParameters = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _clear_force_renegotiation_info(_ctx: int, _session: int, parameters: int) -> None:
    flags = ctypes.c_uint.from_address(parameters + FLAGS_OFFSET)
    flags.value &= ~FORCE_RENEGOTIATION_INFO


_user_parameters = _GetUserParameters(_clear_force_renegotiation_info)


def _ptr(address: int) -> int:
    return int(ctypes.c_void_p.from_address(address).value or 0)


def relax_renegotiation_info(dtls_object: Any) -> bool:
    """Install the callback on one DTLSSocket ``DTLS`` object; False if its layout is not the expected one."""
    obj = id(dtls_object)
    ctx = _ptr(obj + OBJECT_HEADER)
    handler = obj + OBJECT_HEADER + POINTER
    if not ctx:
        return False
    app_at = next((off for off in range(0, 8 * POINTER, POINTER) if _ptr(ctx + off) == obj), None)
    if app_at is None or _ptr(ctx + app_at + POINTER) != handler:
        log.warning("DTLSSocket's DTLS object is not laid out as expected: tinydtls' defaults stay")
        return False
    slots = [_ptr(handler + i * POINTER) for i in range(HANDLER_SLOT + 1)]
    if not all(slots[:HANDLER_SLOT]) or slots[HANDLER_SLOT] not in (0, _address()):
        log.warning("DTLSSocket's tinydtls handler is not the expected one: tinydtls' defaults stay")
        return False
    ctypes.c_void_p.from_address(handler + HANDLER_SLOT * POINTER).value = _address()
    return True


def _address() -> int:
    return int(ctypes.cast(_user_parameters, ctypes.c_void_p).value or 0)
