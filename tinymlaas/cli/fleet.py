"""CLI command for simulated fleets (``simulate``).

It runs locally: it starts simulated devices in this process against any LwM2M server (ours or
another) and keeps them running until interrupted or ``--duration`` ends. Registered on the
main app by ``tinymlaas.cli.main``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Optional
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from device_profiles import Profile, ProfileError, get_profile
from tinymlaas.cli.client import OneLineErrors
from tinymlaas.cli.terminal import console

out = console()
DirsOpt = typer.Option(None, "--profiles-dir", help="another directory of profile files (repeatable)")


def _security(server: str, credentials: str | None, bootstrap: str | None) -> Any:
    """Each simulated device's credentials (``--credentials`` CSV) and bootstrap server."""
    from simulator.security import fleet_security, read_credentials_csv

    if credentials is None:
        if urlsplit(server).scheme == "coaps" or bootstrap:
            raise ValueError("coaps:// and --bootstrap need --credentials FILE (endpoint,identity,key[,purpose])")
        return None
    with open(credentials, encoding="utf-8") as f:
        table = read_credentials_csv(f.read())
    target = None
    if bootstrap:
        parts = urlsplit(bootstrap)
        if parts.scheme not in ("coap", "coaps") or not parts.hostname:
            raise ValueError(f"--bootstrap {bootstrap!r}: expected coaps://HOST:PORT or coap://HOST:PORT")
        target = (parts.hostname, parts.port or (5784 if parts.scheme == "coaps" else 5783))
    return fleet_security(table, target)


async def run_simulation(server: str, profiles: list[Profile], count: int, version: str, objects: tuple[int, ...],
                         queue: bool, lifetime: int, faults_text: str, duration: float | None, prefix: str,
                         personality: str = "tinymlaas", security: Any = None) -> int:
    from simulator.faults import Faults
    from simulator.fleet import FleetSpec, build_fleet, start_fleet, stop_fleet
    from simulator.runtimes import ModelRunner

    parts = urlsplit(server)
    if parts.scheme not in ("coap", "coaps") or not parts.hostname:
        raise ValueError(f"--server {server!r}: expected coap://HOST:PORT or coaps://HOST:PORT")
    address = (parts.hostname, parts.port or (5684 if parts.scheme == "coaps" else 5683))
    faults = Faults.parse(faults_text)
    runner = ModelRunner()
    specs = [FleetSpec(p, count, version, objects, queue, lifetime, faults,
                       prefix=f"{prefix}-{p.name}" if prefix else "", personality=personality) for p in profiles]
    devices = build_fleet(specs, address, runner, security=security)
    with Progress(TextColumn("registering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=False) as bar:
        task = bar.add_task("register", total=len(devices))
        failures = await start_fleet(devices, progress=lambda n: bar.advance(task, n))
    up = len(devices) - len(failures)
    out.print(f"{up} of {len(devices)} simulated devices registered with {server}"
              + (f"; {len(failures)} failed, first: {escape(str(failures[0]))}" if failures else ""))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), duration)
    except asyncio.TimeoutError:
        pass
    await stop_fleet(devices)
    runner.close()
    return 0 if not failures else 1


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    """Add ``simulate`` to the main CLI."""


    @app.command()
    @one_line_errors
    def simulate(
        server: str = typer.Option("coap://127.0.0.1:5683", help="the LwM2M server"),
        profile: list[str] = typer.Option(["nrf52840"], help="device profile (repeatable)"),
        count: int = typer.Option(1, min=1, max=20000, help="devices per profile"),
        version: str = typer.Option("1.1", help="LwM2M version the devices speak: 1.0, 1.1, 1.2"),
        objects: str = typer.Option("9", help="update objects: 9, 5 or 9,5"),
        queue: bool = typer.Option(False, help="queue mode (devices sleep between updates)"),
        lifetime: int = typer.Option(300, min=1, help="registration lifetime, s"),
        faults: str = typer.Option("", help="e.g. loss=0.1,latency=50,drop-after=5,corrupt-block=3,drift=0.05,seed=7"),
        duration: Optional[float] = typer.Option(None, help="stop after S seconds (default: until Ctrl-C)"),
        prefix: str = typer.Option("", help="endpoint name prefix"),
        personality: str = typer.Option("tinymlaas", help="how the devices behave: tinymlaas (our firmware), "
                                        "no-ml-objects, reregisters (queue mode, Register on wake), firmware-only"),
        credentials: Optional[str] = typer.Option(None,
                                                  help="CSV endpoint,identity,key[,purpose]: DTLS-PSK per device"),
        bootstrap: Optional[str] = typer.Option(None, help="bootstrap server coaps://HOST:PORT (or coap://)"),
        dirs: Optional[list[str]] = DirsOpt,
    ) -> None:
        """Run simulated MCUs that register with SERVER and answer it like the real boards."""
        try:
            chosen = [get_profile(name, dirs or ()) for name in profile]
            objs = tuple(int(x) for x in objects.split(","))
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not set(objs) <= {5, 9}:
            raise ValueError(f"--objects {objects!r}: expected 9, 5 or 9,5")
        from simulator.personality import personality as check_personality

        check_personality(personality)
        raise typer.Exit(asyncio.run(run_simulation(server, chosen, count, version, objs, queue, lifetime,
                                                    faults, duration, prefix, personality,
                                                    _security(server, credentials, bootstrap))))


__all__ = ["register", "ProfileError"]
