"""``GET /metrics`` (setting ``metrics.enabled``): the server's figures in the Prometheus text format.

Every figure is read when scraped, from the objects that keep it: live registrations
(``RegistrationTable``), the store's committed batches and writes, the compile cache's builds and
hits, deployments in flight, and every counter and gauge of the server's ``Metrics`` (what the
protocol bounds refused, dropped and pruned: ``tinymlaas_<name>_total`` / ``tinymlaas_<name>``).
The route wants the admin token like the others (Prometheus sends it with ``authorization:
{credentials: ...}``).

Written here rather than with a client library: six values read at scrape time, each three
lines of the exposition format (HELP, TYPE, value); a library's registry, collectors and
process metrics would be more code to wire than this.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def figures(server: Any, deployer: Any) -> list[tuple[str, str, str, Callable[[], float]]]:
    """(name, type, help, read) for every metric; the deployer's only when there is one."""
    out: list[tuple[str, str, str, Callable[[], float]]] = [
        ("tinymlaas_registrations", "gauge", "devices registered now", lambda: len(server.registrations)),
        ("tinymlaas_store_batches_total", "counter", "database batches committed", lambda: server.store.batches),
        ("tinymlaas_store_writes_total", "counter", "writes committed in those batches", lambda: server.store.jobs),
    ]
    if deployer is not None:
        out += [
            ("tinymlaas_compile_builds_total", "counter", "compilations run by this process",
             lambda: deployer.cache.compiles),
            ("tinymlaas_compile_cache_hits_total", "counter", "builds answered from the compile cache",
             lambda: deployer.cache.hits),
            ("tinymlaas_deployments_in_flight", "gauge", "deployments being driven now", lambda: len(deployer.tasks)),
        ]
    return out


def exposition(server: Any, deployer: Any) -> str:
    lines = []
    for name, kind, text, read in figures(server, deployer):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {float(read()):g}"]
    snap = server.metrics.snapshot()  # the bounds' counters and gauges (tinymlaas.server.metrics)
    for kind, suffix in (("counters", "_total"), ("gauges", "")):
        for key, value in snap.get(kind, {}).items():
            name = f"tinymlaas_{key}{suffix}"
            lines += [f"# TYPE {name} {'counter' if suffix else 'gauge'}", f"{name} {float(value):g}"]
    return "\n".join(lines) + "\n"


def register(app: FastAPI, server: Any, deployer: Any, dependencies: list[Any]) -> None:
    @app.get("/metrics", dependencies=dependencies, response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(exposition(server, deployer), media_type=CONTENT_TYPE)
