"""CLI commands for device profiles and simulated fleets (``profiles``, ``simulate``).

They run locally: ``profiles`` reads the profile files, ``simulate`` starts simulated devices
in this process against any LwM2M server (ours or another) and keeps them running until
interrupted or ``--duration`` ends. Registered on the main app by ``tinymlaas.cli.main``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any, Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from device_profiles import Profile, ProfileError, get_profile, load_profiles

profiles_app = typer.Typer(help="Device profiles: real MCUs and what they leave free for ML.", no_args_is_help=True)
out = Console()
DirsOpt = typer.Option(None, "--profiles-dir", help="another directory of profile files (repeatable)")


def kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 64 * 1024 * 1024 else f"{n / 2**20:,.0f} MiB"


def profile_row(p: Profile) -> dict[str, Any]:
    return {"name": p.name, "title": p.title, "core": p.core, "clock_mhz": p.clock_mhz, **p.figures(),
            "firmware": {"sram": p.firmware_sram, "flash": p.firmware_flash}, "references": list(p.references),
            "source": str(p.source)}


def profiles_list(dirs: Optional[list[str]], as_json: bool) -> None:
    profiles = load_profiles(dirs or ())
    if as_json:
        sys.stdout.write(json.dumps([profile_row(p) for p in profiles.values()], indent=2) + "\n")
        return
    table = Table("name", "core", "MHz", "SRAM total/free", "flash total/free", "runtimes")
    for p in profiles.values():
        table.add_row(p.name, p.core, str(p.clock_mhz), f"{kib(p.sram_total)} / {kib(p.sram_free)}",
                      f"{kib(p.flash_total)} / {kib(p.flash_free)}", ", ".join(r.name for r in p.runtimes))
    out.print(table)


def profiles_show(name: str, dirs: Optional[list[str]], as_json: bool) -> None:
    p = get_profile(name, dirs or ())
    row = profile_row(p)
    if as_json:
        sys.stdout.write(json.dumps(row, indent=2) + "\n")
        return
    table = Table("field", "value", title=escape(p.title))
    for key, value in row.items():
        table.add_row(key, escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
    out.print(table)


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
                         security: Any = None) -> int:
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
                       prefix=f"{prefix}-{p.name}" if prefix else "") for p in profiles]
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


def register(app: typer.Typer, one_line_errors: Any) -> None:
    """Add ``profiles`` and ``simulate`` to the main CLI."""

    @profiles_app.command("list")
    @one_line_errors
    def _list(dirs: Optional[list[str]] = DirsOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """Every known profile with its SRAM and flash, total and free for ML."""
        profiles_list(dirs, as_json)

    @profiles_app.command("show")
    @one_line_errors
    def _show(name: str, dirs: Optional[list[str]] = DirsOpt, as_json: bool = typer.Option(False, "--json")) -> None:
        """One profile in full, with its datasheet references."""
        profiles_show(name, dirs, as_json)

    app.add_typer(profiles_app, name="profiles")

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
        credentials: Optional[str] = typer.Option(None, help="CSV endpoint,identity,key[,purpose]: DTLS-PSK per device"),
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
        raise typer.Exit(asyncio.run(run_simulation(server, chosen, count, version, objs, queue, lifetime,
                                                    faults, duration, prefix,
                                                    _security(server, credentials, bootstrap))))


__all__ = ["register", "ProfileError"]
