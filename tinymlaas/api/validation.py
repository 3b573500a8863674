"""Input validation shared by the admin API's routes: strict JSON, bounded numbers, bounded ids.

- ``StrictJSONRoute``: every route's JSON body is parsed with NaN, Infinity and numbers that
  overflow a float (``1e999``) refused, as a 422 naming the position (Python's ``json``
  accepts all three; FastAPI's documented hook for this is a custom ``APIRoute`` whose
  handler gets a ``Request`` subclass).
- ``Body``: the base of every request model: floats must be finite, strings and lists are
  bounded by the field's declaration.
- ``Id`` / ``Limit`` / ``Name``: path and query parameters with ranges a database column can
  hold (SQLite and PostgreSQL integers are 64-bit signed: an id of 2**64 + 1 is a 422 here,
  not an overflow in the driver).

What it does not do: decide what a valid LwM2M path, model or name is (``lwm2m.path``,
``tinymlaas.names``); those raise 400 with their own message.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Callable, Coroutine

from fastapi import Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict

MAX_ID = 2**63 - 1
MAX_LIST = 10_000


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} does not fit a 64-bit float")
    return value


def strict_loads(body: bytes | str) -> Any:
    """``json.loads`` refusing NaN, Infinity and overflowing numbers (``json.JSONDecodeError``)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = strict_loads(body)
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError(f"the body is not UTF-8 (byte {exc.start})", "", 0) from None
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))
        return strict


class Body(BaseModel):
    """Base of request bodies: no NaN or infinite floats anywhere in them."""

    model_config = ConfigDict(allow_inf_nan=False)


Id = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST, description="at most this many rows")]
Name = Annotated[str, Path(min_length=1, max_length=255)]
