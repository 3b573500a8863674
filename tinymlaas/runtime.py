"""Running a server process: CoAP server + admin API in one event loop, and where they live.

``home()`` is the data directory (``$TINYMLAAS_HOME``, default ``~/.tinymlaas``): the SQLite
database, the model registry and compile cache, the package-signing key, and ``api.json``, which tells the CLI where the admin API listens and its token
(created on first start, file mode 0600). ``serve`` runs until cancelled or SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvicorn

from tinymlaas.api.app import create_app
from tinymlaas.bootstrap.server import start_bootstrap
from tinymlaas.security.settings import SecuritySettings
from tinymlaas.deploy.campaigns import Campaigns
from tinymlaas.deploy.service import Deployer
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.store import default_url

log = logging.getLogger(__name__)


def home() -> Path:
    return Path(os.environ.get("TINYMLAAS_HOME") or Path.home() / ".tinymlaas")


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT``; raise ValueError naming the text."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range in {text!r}")
    return host or "127.0.0.1", port


def token_for(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def write_api_file(data_dir: Path, url: str, token: str) -> None:
    path = data_dir / "api.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, f)


@dataclass
class Running:
    server: LwM2MServer
    api_url: str
    token: str
    uvicorn: Any
    api_task: "asyncio.Task[Any]"
    deployer: Deployer
    campaigns: Campaigns
    bootstrap: Any = None  # the bootstrap server, when one is configured

    async def stop(self) -> None:
        """Stop serving. Campaigns and deployments in flight stay as persisted: the next start resumes them."""
        self.uvicorn.should_exit = True
        try:
            await asyncio.wait_for(self.api_task, 10)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.api_task.cancel()
        await self.campaigns.stop()
        self.deployer.close()
        if self.bootstrap is not None:
            await self.bootstrap.stop()
        await self.server.stop()


async def start(coap: tuple[str, int], api: tuple[str, int], db_url: str | None = None,
                data_dir: Path | None = None, token: str | None = None, **server_kw: Any) -> Running:
    """Start the CoAP server and the admin API; write ``api.json`` into the data directory."""
    data_dir = data_dir or home()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = token or token_for(data_dir)
    security = server_kw.pop("security", None) or SecuritySettings()
    if security.key_file is None:
        security = replace(security, key_file=data_dir / "credentials.key")
    server = LwM2MServer(db_url or default_url(data_dir), security=security, **server_kw)
    await server.start(*coap)
    deployer = Deployer(server, data_dir)
    bootstrap = await start_bootstrap(server, lambda: deployer.key.anchor)
    campaigns = Campaigns(deployer)
    sock = socket.socket(socket.AF_INET6 if ":" in api[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(api)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    config = uvicorn.Config(create_app(server, token, deployer, campaigns), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    uv.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # the caller handles signals
    task = asyncio.create_task(uv.serve(sockets=[sock]), name="admin api")
    while not uv.started and not task.done():
        await asyncio.sleep(0.01)
    write_api_file(data_dir, url, token)
    resumed, again = await campaigns.resume_all(), await deployer.resume()
    if resumed or again:
        log.info("resumed campaigns %s and deployments %s", resumed, again)
    return Running(server, url, token, uv, task, deployer, campaigns, bootstrap)


async def serve_forever(coap: tuple[str, int], api: tuple[str, int], db_url: str | None,
                        data_dir: Path | None, **server_kw: Any) -> None:
    running = await start(coap, api, db_url, data_dir, **server_kw)
    # A server holds many long-lived small objects (registrations): freeze what start-up
    # made and collect the young generation less often, so full collections do not pause
    # the event loop for hundreds of milliseconds in a registration storm.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    coaps = running.server.security.coaps_address
    extra = (f", coaps://{coaps[0]}:{coaps[1]}" if coaps else "") + (
        f", bootstrap {' '.join(running.bootstrap.uris())}" if running.bootstrap else "")
    print(f"tinymlaas: LwM2M on coap://{running.server.address[0]}:{running.server.address[1]}{extra}, "
          f"admin API on {running.api_url} (token in {(data_dir or home()) / 'api.json'})", flush=True)
    await stop.wait()
    await running.stop()
