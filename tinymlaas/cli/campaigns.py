"""``tinymlaas groups`` and ``tinymlaas campaigns``: fleets and staged roll-outs from the CLI.

Everything goes through the admin API of a running server (``tinymlaas.cli.client.call``).
Tables for people, ``--json`` for scripts; errors are one line (the ``one_line_errors``
decorator of ``tinymlaas.cli.main``). ``campaigns watch`` (and ``start --watch``) shows rich
progress bars, one per stage plus the overall one, polling ``GET /campaigns/{id}`` every 0.5 s
until the campaign leaves ``running`` or ``--timeout`` runs out.

Registered on the main app by ``tinymlaas.cli.main`` via ``register``. Percentages on the
command line (``--stages 1,10,100 --success 95 --errors 5``) become fractions for the API.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from datetime import datetime
from typing import Any, Callable, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from tinymlaas.cli import client
from tinymlaas.cli.client import CliError, OneLineErrors
from tinymlaas.cli.terminal import console

out = console()
POLL_S = 0.5
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")


def parse_stages(text: str) -> list[float]:
    """``"1,10,100"`` (percent of the group, cumulative) -> ``[0.01, 0.1, 1.0]``."""
    try:
        percents = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise CliError(f"--stages {text!r}: expected percentages separated by commas, e.g. 1,10,100") from None
    if not percents:
        raise CliError(f"--stages {text!r}: no stages")
    if any(not 0 < p <= 100 for p in percents):
        raise CliError(f"--stages {text!r}: each stage is a percentage in (0, 100]")
    if any(b <= a for a, b in itertools.pairwise(percents)):
        raise CliError(f"--stages {text!r}: stages are cumulative and must increase")
    if percents[-1] != 100:
        raise CliError(f"--stages {text!r}: the last stage must be 100")
    return [round(p / 100, 6) for p in percents]


def percent(value: float, option: str) -> float:
    """A percentage from the command line (0-100) -> a fraction."""
    if not 0 <= value <= 100:
        raise CliError(f"{option} {value:g}: expected a percentage between 0 and 100")
    return round(value / 100, 6)


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def show_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def campaign_body(model: str, group: str, name: str | None, stages: str, success: float, errors: float,
                  concurrency: int, backend: str | None, precision: str | None, push: bool,
                  object_id: int | None) -> dict[str, Any]:
    if object_id not in (None, 5, 9):
        raise CliError(f"--object {object_id}: expected 9 (Software Management) or 5 (Firmware Update)")
    if concurrency < 1:
        raise CliError(f"--concurrency {concurrency}: expected at least 1")
    return {"name": name, "model": model, "group": group, "stages": parse_stages(stages),
            "success_threshold": percent(success, "--success"), "error_threshold": percent(errors, "--errors"),
            "concurrency": concurrency, "backend": backend, "precision": precision,
            "method": "push" if push else "pull", "object_id": object_id}


def summary_line(c: dict[str, Any]) -> str:
    o = c["overall"]
    return (f"campaign {c['id']} {c['name']!r}: {c['state']}, stage {c['stage'] + 1} of {len(c['stages'])}, "
            f"{o['succeeded']} succeeded, {o['failed']} failed of {o['devices']}"
            + (f" ({c['note']})" if c.get("note") else ""))


def watch(cid: int, timeout: float, poll: Callable[[int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Progress bars until the campaign leaves ``running`` (or ``timeout`` s pass); its last status."""
    fetch = poll or (lambda i: client.call("GET", client.api_path("campaigns", i)))
    status = fetch(cid)
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as bars:
        tasks: list[TaskID] = []
        for st in status["stage_progress"]:
            tasks.append(bars.add_task(f"stage {st['index'] + 1} ({st['fraction']:.0%})", total=st["devices"],
                                       detail=""))
        overall = bars.add_task("overall", total=status["overall"]["devices"], detail="")
        while True:
            for task, st in zip(tasks, status["stage_progress"], strict=True):  # a campaign's stages are fixed
                bars.update(task, completed=st["finished"], detail=f"{st['failed']} failed")
            o = status["overall"]
            bars.update(overall, completed=o["finished"], detail=f"{status['state']}, {o['failed']} failed")
            if status["state"] != "running" or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
            status = fetch(cid)
    out.print(escape(summary_line(status)), highlight=False)
    if status["state"] == "running":
        raise CliError(f"campaign {cid} still running after {timeout:g} s (it goes on; watch again with "
                       f"'tinymlaas campaigns watch {cid}')")
    return status


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    """Add ``groups`` and ``campaigns`` to the main CLI."""
    groups_app = typer.Typer(help="Device groups: by tag, profile or query.", no_args_is_help=True)
    campaigns_app = typer.Typer(help="Staged roll-outs of a model to a group.", no_args_is_help=True)

    @groups_app.command("add")
    @one_line_errors
    def groups_add(name: str, tag: Optional[str] = typer.Option(None, help="devices with this tag (glob)"),
                   profile: Optional[str] = typer.Option(None, help="devices of this profile (glob)"),
                   query: Optional[str] = typer.Option(None, help="e.g. 'profile=nrf52*,runtime=tflm,registered=yes'; "
                                                       "keys: endpoint profile tag lwm2m core runtime registered"),
                   as_json: bool = JsonOpt) -> None:
        """Create or replace a group."""
        row = client.call("POST", "/groups", json_body={"name": name, "tag": tag, "profile": profile, "query": query})
        if as_json:
            show_json(row)
        else:
            out.print(f"group {escape(name)}: {len(row['members'])} devices", highlight=False)

    @groups_app.command("list")
    @one_line_errors
    def groups_list(as_json: bool = JsonOpt) -> None:
        """Every group with its selector and current size."""
        rows = client.call("GET", "/groups")
        if as_json:
            show_json(rows)
            return
        table = Table("name", "tag", "profile", "query", "devices")
        for r in rows:
            s = r["selector"]
            table.add_row(escape(r["name"]), escape(s.get("tag") or "-"), escape(s.get("profile") or "-"),
                          escape(s.get("query") or "-"), str(r["count"]))
        out.print(table)

    @groups_app.command("show")
    @one_line_errors
    def groups_show(name: str, as_json: bool = JsonOpt) -> None:
        """A group and its current members."""
        row = client.call("GET", client.api_path("groups", name))
        if as_json:
            show_json(row)
            return
        s = row["selector"]
        out.print(f"group {escape(name)}: " + ", ".join(f"{k}={escape(str(v))}" for k, v in s.items() if v)
                  + f"; {len(row['members'])} devices", highlight=False)
        for ep in row["members"]:
            out.print(f"  {escape(ep)}", highlight=False)

    @campaigns_app.command("start")
    @one_line_errors
    def start(model: str = typer.Argument(..., help="NAME or NAME:VERSION"),
              group: str = typer.Option(..., "--group", help="the group to roll out to"),
              name: Optional[str] = typer.Option(None, help="default: MODEL:VERSION to GROUP"),
              stages: str = typer.Option("1,10,100", help="cumulative percentages of the group"),
              success: float = typer.Option(95.0, help="percent of a stage that must succeed to go on"),
              errors: float = typer.Option(5.0, help="percent of failures that halts the campaign"),
              concurrency: int = typer.Option(50, help="deployments in flight at most"),
              backend: Optional[str] = typer.Option(None, help="default: chosen per device"),
              precision: Optional[str] = typer.Option(None, help="default: chosen per device"),
              push: bool = typer.Option(False, "--push", help="push the package (Block1) instead of pull"),
              object_id: Optional[int] = typer.Option(None, "--object",
                                                      help="9 or 5 (default: 9 if the device has it)"),
              watch_: bool = typer.Option(False, "--watch", help="show progress until the campaign ends"),
              timeout: float = typer.Option(3600.0, help="with --watch: stop watching after S seconds"),
              as_json: bool = JsonOpt) -> None:
        """Roll MODEL out to a group in stages."""
        body = campaign_body(model, group, name, stages, success, errors, concurrency, backend, precision,
                             push, object_id)
        status = client.call("POST", "/campaigns", json_body=body)
        if as_json and not watch_:
            show_json(status)
            return
        out.print(f"campaign {status['id']} started: {status['model']}:{status['version']} to "
                  f"{len(status['endpoints'])} devices of {escape(group)}", highlight=False)
        if watch_:
            final = watch(status["id"], timeout)
            if as_json:
                show_json(final)

    @campaigns_app.command("list")
    @one_line_errors
    def list_(as_json: bool = JsonOpt) -> None:
        """Every campaign with its state and counts."""
        rows = client.call("GET", "/campaigns")
        if as_json:
            show_json(rows)
            return
        table = Table("id", "name", "model", "group", "state", "stage", "devices", "ok", "failed", "created")
        for r in rows:
            table.add_row(str(r["id"]), escape(r["name"]), escape(f"{r['model']}:{r['version']}"), escape(r["group"]),
                          r["state"], f"{r['stage'] + 1}/{len(r['stages'])}", str(r["devices"]),
                          str(r["succeeded"]), str(r["failed"]), when(r["created_at"]))
        out.print(table)

    @campaigns_app.command("show")
    @one_line_errors
    def show(cid: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
        """A campaign: stages, per-device states and its history."""
        c = client.call("GET", client.api_path("campaigns", cid))
        if as_json:
            show_json(c)
            return
        out.print(escape(summary_line(c)), highlight=False)
        stages = Table("stage", "share", "devices", "started", "finished", "succeeded", "failed")
        for st in c["stage_progress"]:
            stages.add_row(str(st["index"] + 1), f"{st['fraction']:.0%}", str(st["devices"]), str(st["started"]),
                           str(st["finished"]), str(st["succeeded"]), str(st["failed"]))
        out.print(stages)
        devices = Table("endpoint", "deployment", "state", "error")
        for d in c["devices"]:
            devices.add_row(escape(d["endpoint"]), str(d["deployment"] or "-"), d["state"], escape(d["error"] or ""))
        out.print(devices)
        for h in c["history"]:
            out.print(f"{when(h['ts'])}  {h['state']}  {escape(h.get('note') or '')}", highlight=False)

    def control(action: str) -> Callable[..., None]:
        def command(cid: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
            row = client.call("POST", client.api_path("campaigns", cid, action))
            if as_json:
                show_json(row)
            else:
                out.print(f"campaign {cid}: {row['state']}", highlight=False)
        command.__doc__ = {"pause": "Start no new devices (in-flight ones finish).",
                           "resume": "Continue a paused campaign.",
                           "cancel": "Start no new devices and cancel the in-flight ones."}[action]
        return command

    for action in ("pause", "resume", "cancel"):
        campaigns_app.command(action)(one_line_errors(control(action)))

    @campaigns_app.command("watch")
    @one_line_errors
    def watch_cmd(cid: int = typer.Argument(..., metavar="ID"),
                  timeout: float = typer.Option(3600.0, help="stop watching after S seconds")) -> None:
        """Progress bars per stage and overall until the campaign ends."""
        watch(cid, timeout)

    app.add_typer(groups_app, name="groups")
    app.add_typer(campaigns_app, name="campaigns")


__all__ = ["campaign_body", "parse_stages", "percent", "register", "watch"]
