"""The CLI's side of the admin API: where it is, the token, and one-line errors.

The API address and token come from ``$TINYMLAAS_API`` / ``$TINYMLAAS_TOKEN``, else from
``api.json`` in the data directory that ``tinymlaas serve`` wrote. ``running()`` tells whether
a server answers there (commands that can also work without one, such as ``models``, use it);
``local_db()`` is the database to use directly when none runs: ``--db`` / ``$TINYMLAAS_DB``,
else the one the server of this data directory last used (``api.json``), else the default.
``api.json`` in the data directory that ``tinymlaas serve`` wrote. Over TLS the server's
certificate is verified against ``$TINYMLAAS_CA``, else the certificate ``api.json`` names,
else the system's trust store.

Routes are built with ``api_path(...)``, never by formatting names into a string: every segment
is percent-encoded, so a name such as ``x/../victim`` stays one segment and cannot address
another device (``tests/test_names.py`` checks that every call site does this).
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any, Callable, Iterator, Protocol, TypeVar
from urllib.parse import quote

import httpx

from tinymlaas.runtime import home


class CliError(Exception):
    """A problem to print as one line (no traceback)."""


F = TypeVar("F", bound=Callable[..., Any])


class OneLineErrors(Protocol):
    """A command decorator that prints expected failures as one line (``tinymlaas.cli.main.one_line_errors``)."""

    def __call__(self, fn: F, /) -> F: ...


def api_path(*segments: str | int) -> str:
    """An API route from its segments, each percent-encoded (``api_path("devices", ep, "read")``)."""
    return "".join("/" + quote(str(s), safe="") for s in segments)


def _api_file() -> dict[str, Any]:
    file = home() / "api.json"
    try:
        return dict(json.loads(file.read_text()))
    except FileNotFoundError:
        raise CliError(f"no running server found ({file} is missing): start one with 'tinymlaas serve' "
                       "or set TINYMLAAS_API and TINYMLAAS_TOKEN") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {file}: {exc}") from None


def endpoint() -> tuple[str, str]:
    url, token = os.environ.get("TINYMLAAS_API"), os.environ.get("TINYMLAAS_TOKEN")
    if not (url and token):
        data = _api_file()
        url, token = url or data["url"], token or data["token"]
    return url, token


def api_file() -> dict[str, Any]:
    """``api.json``, or {} when there is none (or it cannot be read)."""
    try:
        return _api_file()
    except CliError:
        return {}


def running() -> bool:
    """Whether a server answers at the admin API the environment or ``api.json`` names."""
    if os.environ.get("TINYMLAAS_API") and os.environ.get("TINYMLAAS_TOKEN"):
        url = os.environ["TINYMLAAS_API"]
    else:
        data = api_file()
        pid = data.get("pid")
        if not data.get("url") or not isinstance(pid, int):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        url = data["url"]
    try:
        return httpx.get(url + "/health", timeout=2.0, verify=verify()).status_code == 200
    except httpx.HTTPError:
        return False


def local_db(given: str | None) -> str:
    """The database URL to open directly (no server runs): the one given, else the server's."""
    from tinymlaas.store.store import default_url

    return given or os.environ.get("TINYMLAAS_DB") or api_file().get("db") or default_url(home())
def verify() -> ssl.SSLContext | bool:
    """What to verify an https API's certificate against (True: the system's trust store)."""
    ca = os.environ.get("TINYMLAAS_CA")
    if not ca and not os.environ.get("TINYMLAAS_API"):
        try:
            ca = _api_file().get("ca")
        except CliError:
            ca = None
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot use {ca} to verify the API's certificate: {exc}") from None


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    body: Any = None
    try:
        body = resp.json()
        msg = body.get("error") or body.get("detail") or resp.text
        if isinstance(msg, list):  # FastAPI validation details
            msg = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}" for d in msg)
    except ValueError:
        msg = resp.text
    code = f" (CoAP {body['coap_code']})" if isinstance(body, dict) and body.get("coap_code") else ""
    raise CliError(f"{msg}{code}")


def call(method: str, route: str, *, json_body: Any = None, content: str | None = None,
         params: dict[str, Any] | None = None, timeout: float = 60.0, content_type: str = "application/xml",
         files: Any = None, data: dict[str, Any] | None = None) -> Any:
    url, token = endpoint()
    headers = {"Authorization": f"Bearer {token}"}
    if content is not None:
        headers["Content-Type"] = content_type
    try:
        resp = httpx.request(method, url + route, json=json_body, content=content, params=params,
                             headers=headers, timeout=timeout, files=files, data=data, verify=verify())
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the admin API at {url}: {exc}") from None
    _raise_for(resp)
    return resp.json()


def stream(route: str, json_body: Any, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    url, token = endpoint()
    try:
        with httpx.stream("POST", url + route, json=json_body, headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(10.0, read=timeout), verify=verify()) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the admin API at {url}: {exc}") from None
