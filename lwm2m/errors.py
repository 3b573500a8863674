"""Exceptions that carry their CoAP response code (as aiocoap's ``error`` module does).

The server turns any of these into a response with that code and the message as a
diagnostic payload; the CLI prints the message on one line.
"""

from __future__ import annotations

from aiocoap import numbers


class LwM2MError(Exception):
    """Base class: ``code`` is the CoAP response code this error maps to."""

    code: numbers.Code = numbers.Code.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(LwM2MError):
    code = numbers.Code.BAD_REQUEST


class Unauthorized(LwM2MError):
    """4.01: the peer lacks the access right (TS Core 6.3 "Access Right Permission Denied")."""

    code = numbers.Code.UNAUTHORIZED


class Forbidden(LwM2MError):
    """4.03: the request is understood but not allowed for this peer (TS Core 6.2: a
    registration interface request whose security identity does not match)."""

    code = numbers.Code.FORBIDDEN


class NotFound(LwM2MError):
    code = numbers.Code.NOT_FOUND


class MethodNotAllowed(LwM2MError):
    code = numbers.Code.METHOD_NOT_ALLOWED


class NotAcceptable(LwM2MError):
    code = numbers.Code.NOT_ACCEPTABLE


class Conflict(LwM2MError):
    code = numbers.Code.CONFLICT


class PreconditionFailed(LwM2MError):
    """4.12: used for an unsupported LwM2M version at registration (TS Transport 6.2.1)."""

    code = numbers.Code.PRECONDITION_FAILED


class RequestEntityTooLarge(LwM2MError):
    code = numbers.Code.REQUEST_ENTITY_TOO_LARGE


class UnsupportedContentFormat(LwM2MError):
    code = numbers.Code.UNSUPPORTED_CONTENT_FORMAT


class CodecError(BadRequest):
    """A payload that does not decode (or a value that cannot be encoded) in a content format.

    The message names the content format and, where known, the path.
    """
