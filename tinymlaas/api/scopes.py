"""Which scope each admin-API route needs, and the check every request goes through.

Scopes (a token has one or more; ``GRANTS`` says what each covers):

=========  ===============================================================================
read       look: devices, events, objects, deployments, groups, campaigns, backends, metrics
operate    talk to devices: read, write, execute, discover, attributes, create, delete,
           observe, tags (and everything ``read`` may)
deploy     models onto devices: plan, deploy, cancel, rollback, groups, campaigns (and ``read``)
admin      everything, and the server itself: tokens, the audit log, object definitions,
           credentials and profiles
=========  ===============================================================================

``ROUTES`` maps (method, route template) to the scope it needs (``PUBLIC``: none). The check
(``authorize``, a dependency on the whole app) refuses a route missing from the table with
403, so a new route is closed until someone decides its scope, and
``tests/test_api_scopes.py`` fails for it.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tinymlaas.api.tokens import Tokens

SCOPES = ("read", "operate", "deploy", "admin")
GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "operate": frozenset({"operate", "read"}),
    "deploy": frozenset({"deploy", "read"}),
    "admin": frozenset(SCOPES),
}
PUBLIC = None

ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): PUBLIC,
    # devices and the object model
    ("GET", "/devices"): "read",
    ("GET", "/devices/{endpoint}"): "read",
    ("GET", "/devices/{endpoint}/observations"): "read",
    ("POST", "/devices/{endpoint}/tags"): "operate",
    ("POST", "/devices/{endpoint}/read"): "operate",
    ("POST", "/devices/{endpoint}/write"): "operate",
    ("POST", "/devices/{endpoint}/execute"): "operate",
    ("POST", "/devices/{endpoint}/discover"): "operate",
    ("POST", "/devices/{endpoint}/write-attributes"): "operate",
    ("POST", "/devices/{endpoint}/create"): "operate",
    ("POST", "/devices/{endpoint}/delete"): "operate",
    ("POST", "/devices/{endpoint}/observe"): "operate",
    ("DELETE", "/devices/{endpoint}/observations"): "operate",
    ("GET", "/objects"): "read",
    ("POST", "/objects"): "admin",
    ("GET", "/events"): "read",
    ("GET", "/metrics"): "read",
    ("GET", "/devices/{endpoint}/settings"): "read",
    ("PATCH", "/devices/{endpoint}/settings"): "operate",
    ("GET", "/devices/{endpoint}/queue"): "read",
    ("GET", "/profiles"): "read",
    ("GET", "/profiles/{name}"): "read",
    ("POST", "/profiles"): "admin",
    ("DELETE", "/profiles/{name}"): "admin",
    # models
    ("POST", "/models"): "deploy",
    ("GET", "/models"): "read",
    ("GET", "/models/{ref}"): "read",
    ("DELETE", "/models/{ref}"): "deploy",
    ("POST", "/models/{ref}/inspect"): "read",
    # deployments
    ("GET", "/backends"): "read",
    ("POST", "/deployments/plan"): "deploy",
    ("POST", "/deployments"): "deploy",
    ("GET", "/deployments"): "read",
    ("GET", "/deployments/{deployment_id}"): "read",
    ("POST", "/deployments/{deployment_id}/cancel"): "deploy",
    ("POST", "/devices/{endpoint}/rollback"): "deploy",
    # groups and campaigns
    ("POST", "/groups"): "deploy",
    ("GET", "/groups"): "read",
    ("GET", "/groups/{name}"): "read",
    ("POST", "/campaigns"): "deploy",
    ("GET", "/campaigns"): "read",
    ("GET", "/campaigns/{cid}"): "read",
    ("POST", "/campaigns/{cid}/pause"): "deploy",
    ("POST", "/campaigns/{cid}/resume"): "deploy",
    ("POST", "/campaigns/{cid}/cancel"): "deploy",
    # security: credentials, bootstrap configurations, package-signing keys
    ("GET", "/security"): "read",
    ("GET", "/credentials"): "admin",
    ("POST", "/credentials"): "admin",
    ("POST", "/credentials/import"): "admin",
    ("POST", "/credentials/{endpoint}/rotate"): "admin",
    ("POST", "/credentials/{endpoint}/revoke"): "admin",
    ("DELETE", "/credentials/{endpoint}"): "admin",
    ("GET", "/bootstrap/configs"): "admin",
    ("PUT", "/bootstrap/configs"): "admin",
    ("DELETE", "/bootstrap/configs"): "admin",
    ("GET", "/bootstrap/{endpoint}"): "admin",
    ("GET", "/signing-keys"): "read",
    ("POST", "/signing-keys/rotate"): "admin",
    # the server itself
    ("POST", "/tokens"): "admin",
    ("GET", "/tokens"): "admin",
    ("DELETE", "/tokens/{token_id}"): "admin",
    ("GET", "/audit"): "admin",
}


def covers(scopes: frozenset[str], needed: str) -> bool:
    return any(needed in GRANTS.get(s, frozenset()) for s in scopes)


def parse_scopes(text: str | list[str]) -> frozenset[str]:
    """Scopes from ``read,operate`` or a list; ValueError naming an unknown one."""
    items = text.split(",") if isinstance(text, str) else text
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        problem = f"unknown scope {', '.join(unknown)}" if unknown else "a token needs at least one scope"
        raise ValueError(f"{problem} (scopes: {', '.join(SCOPES)})")
    return scopes


def authorizer(tokens: Tokens) -> Any:
    """The app-wide dependency: 401 without a valid token, 403 without the route's scope."""
    bearer = HTTPBearer(auto_error=False)

    async def authorize(request: Request) -> None:
        route = request.scope.get("route")
        method = "GET" if request.method == "HEAD" else request.method
        key = (method, getattr(route, "path", request.url.path))
        if key not in ROUTES:
            raise HTTPException(403, f"route {key[0]} {key[1]} has no scope assigned: refused")
        needed = ROUTES[key]
        if needed is PUBLIC:
            return
        creds: HTTPAuthorizationCredentials | None = await bearer(request)
        info = tokens.authenticate(creds.credentials) if creds is not None else None
        if info is None:
            raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})
        request.state.token = info
        if not covers(info.scopes, needed):
            raise HTTPException(403, f"token {info.name!r} (scopes {', '.join(sorted(info.scopes))}) lacks the "
                                     f"{needed!r} scope that {key[0]} {key[1]} needs")
    return authorize
