"""Running a server process: CoAP server + admin API in one event loop, built from the ``Settings``.

``launch(settings)`` is the one way a server starts (``tinymlaas serve``, the demo and the tests'
``start(...)`` shorthand all come here): it turns the configuration (``tinymlaas.config``) into
the LwM2M server, the store, the ``Deployer`` (its delivery ``Policy`` from the delivery and retry
settings), the campaigns and the admin API. ``home()`` is the data directory (``data.home``:
``$TINYMLAAS_HOME``, default ``~/.tinymlaas``): the SQLite database, the model registry and
compile cache, the package-signing key, and ``api.json``, which tells the CLI where the admin
API listens, its token (created on first start, file mode 0600), the server's pid and the
database URL it uses (so that the CLI, when no server runs, works on that same database).
``serve_forever`` runs until SIGTERM/SIGINT.

The admin API listens on loopback unless told otherwise; given a certificate and its key
(``admin.cert_file``, ``admin.key_file``) it speaks HTTPS only (``api.json`` then names the
certificate, which the CLI verifies against).
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
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from tinymlaas import config
from tinymlaas.api.app import create_app
from tinymlaas.bootstrap.server import start_bootstrap
from tinymlaas.config import Settings
from tinymlaas.security.settings import SecuritySettings
from tinymlaas.deploy.campaigns import Campaigns
from tinymlaas.deploy.delivery import Policy
from tinymlaas.deploy.service import Deployer
from tinymlaas.server.limits import Limits
from tinymlaas.server.server import LwM2MServer
from tinymlaas.store.store import default_url

log = logging.getLogger(__name__)


def home() -> Path:
    """The data directory of the effective configuration (file, environment, default)."""
    return config.load().settings.data.home


class JsonLines(logging.Formatter):
    """``logging.format = "json"``: one JSON object per record (time, level, logger, message)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if settings.logging.format == "json"
                         else logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.logging.level.upper(), handlers=[handler], force=True)


def delivery_policy(settings: Settings) -> Policy:
    """The delivery ``Policy`` from the delivery timeouts and the retry bounds."""
    d, r = settings.delivery, settings.retry
    return Policy(op_timeout=d.op_timeout_s, push_timeout=d.push_timeout_s, deadline_s=d.deadline_s,
                  download_attempts=d.download_attempts, poll_s=d.poll_s, observed_poll_s=d.observed_poll_s,
                  backoff_s=(r.first_s, r.longest_s), install_attempts=d.install_attempts,
                  op_attempts=d.op_attempts, stale_s=d.stale_s, download_min_Bps=d.download_min_Bps,
                  reregister_s=d.reregister_s, max_reports=d.max_reports, queue_wait_s=d.queue_wait_s)


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


def write_api_file(data_dir: Path, url: str, token: str, db_url: str | None = None,
                   coap: tuple[str, int] | None = None, ca: Path | None = None) -> None:
    path = data_dir / "api.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "pid": os.getpid(), "db": db_url,
                   "coap": f"coap://{coap[0]}:{coap[1]}" if coap else None, **({"ca": str(ca)} if ca else {})}, f)


def check_tls(settings: Settings) -> tuple[Path, Path] | None:
    """The admin API's certificate (PEM, may hold the chain) and key (PEM), when both are set."""
    cert, key = settings.admin.cert_file, settings.admin.key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("admin.cert_file and admin.key_file go together (--api-cert and --api-key)")
    for what, p in (("certificate", cert), ("key", key)):
        if not Path(p).is_file():
            raise ValueError(f"API TLS {what} {p} is not a readable file")
    return Path(cert), Path(key)


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
                data_dir: Path | None = None, token: str | None = None, *, read_capabilities: bool | None = None,
                expiry_interval_s: float | None = None, queue_awake_s: float | None = None,
                tls: tuple[Path, Path] | None = None, limits: Limits | None = None,
                security: SecuritySettings | None = None) -> Running:
    """Shorthand for ``launch``: these values over the effective configuration (``tls``: the
    admin API's certificate and key files; ``limits``: the protocol bounds; ``security``: DTLS,
    NoSec policy and bootstrap)."""
    overrides: dict[str, dict[str, Any]] = {
        "coap": {"host": coap[0], "port": coap[1], "read_capabilities": read_capabilities,
                 "expiry_interval_s": expiry_interval_s},
        "admin": {"host": api[0], "port": api[1], "token": token, "cert_file": tls[0] if tls else None,
                  "key_file": tls[1] if tls else None},
        "database": {"url": db_url}, "data": {"home": data_dir}, "queue": {"awake_s": queue_awake_s},
        "limits": dataclasses.asdict(limits) if limits is not None else {},
        "security": dataclasses.asdict(security) if security is not None else {}}
    cli = {section: {k: v for k, v in values.items() if v is not None} for section, values in overrides.items()}
    return await launch(config.load(cli=cli).settings)


async def launch(settings: Settings) -> Running:
    """Start the CoAP server and the admin API; write ``api.json`` into the data directory."""
    data_dir = settings.data.home
    tls = check_tls(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    token = settings.admin.token.get_secret_value() if settings.admin.token else token_for(data_dir)
    db = settings.database
    db_url = db.url or default_url(data_dir)
    security = settings.security
    if security.key_file is None:
        security = dataclasses.replace(security, key_file=data_dir / "credentials.key")
    server = LwM2MServer(db_url, read_capabilities=settings.coap.read_capabilities,
                         expiry_interval_s=settings.coap.expiry_interval_s, queue_awake_s=settings.queue.awake_s,
                         pool_size=db.pool_size, max_overflow=db.max_overflow, profile_dirs=settings.profiles.dirs,
                         lifetime_range_s=(settings.coap.lifetime_min_s, settings.coap.lifetime_max_s),
                         limits=settings.limits, security=security)
    await server.start(settings.coap.host, settings.coap.port)
    deployer = Deployer(server, data_dir, policy=delivery_policy(settings), workers=settings.compile.workers,
                        key_file=settings.data.signing_key_file)
    bootstrap = await start_bootstrap(server, lambda: deployer.key.anchor)
    campaigns = Campaigns(deployer)
    api = (settings.admin.host, settings.admin.port)
    sock = socket.socket(socket.AF_INET6 if ":" in api[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(api)
    host, port = sock.getsockname()[:2]
    url = f"{'https' if tls else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"
    app = create_app(server, token, deployer, campaigns, metrics=settings.metrics.enabled)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                       ssl_certfile=str(tls[0]) if tls else None,
                                       ssl_keyfile=str(tls[1]) if tls else None))
    uv.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # the caller handles signals
    task = asyncio.create_task(uv.serve(sockets=[sock]), name="admin api")
    while not uv.started and not task.done():
        await asyncio.sleep(0.01)
    write_api_file(data_dir, url, token, db_url, server.address, tls[0].resolve() if tls else None)
    resumed, again = await campaigns.resume_all(), await deployer.resume()
    if resumed or again:
        log.info("resumed campaigns %s and deployments %s", resumed, again)
    return Running(server, url, token, uv, task, deployer, campaigns, bootstrap)


async def serve_forever(settings: Settings) -> None:
    running = await launch(settings)
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
          f"admin API on {running.api_url} (token in {settings.data.home / 'api.json'})", flush=True)
    await stop.wait()
    await running.stop()
