"""CLI: what an operator sets about a device (``devices set-profile|set-figures|set-queue``) and
what is held for it (``devices queue``), through the running server's admin API.

``set-profile EP BOARD`` names the board a device is when neither the ML Capability object nor
its Device object tells (any profile the server knows: ``tinymlaas profiles list``);
``set-figures`` gives the figures a deployment decision needs instead (SRAM and flash free for
ML, the runtimes in its firmware); ``set-queue`` its awake window and whether to treat it as a
queue-mode device. All are stored in the server's database and take effect at once.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, Optional

import typer

from rich.markup import escape
from rich.table import Table

from tinymlaas.cli.client import CliError, OneLineErrors, api_path, call
from tinymlaas.cli.terminal import console

out = console()


def _show(endpoint: str, s: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(s) + "\n")
        return
    parts = [f"profile {s['profile'] or '-'}",
             f"SRAM free {s['sram_free'] if s['sram_free'] is not None else '-'}",
             f"flash free {s['flash_free'] if s['flash_free'] is not None else '-'}",
             f"runtimes {', '.join(s['runtimes']) or '-'}",
             f"awake window {str(s['awake_s']) + ' s' if s['awake_s'] is not None else 'server default'}",
             "queue mode " + {True: "on", False: "off", None: "as registered"}[s["queue_mode"]]]
    out.print(f"{escape(endpoint)}: " + "; ".join(parts), highlight=False)


def register(devices_app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")

    @devices_app.command("set-profile")
    @one_line_errors
    def set_profile(endpoint: str, board: Optional[str] = typer.Argument(None, help="a profile name "
                                                                           "(tinymlaas profiles list)"),
                    clear: bool = typer.Option(False, "--clear", help="forget the assigned profile"),
                    as_json: bool = JsonOpt) -> None:
        """Say which board a device is (for devices without the ML Capability object whose Device
        object matches no profile); stored by the server, used by every deployment decision."""
        if (board is None) != clear:
            raise CliError("give a BOARD, or --clear")
        _show(endpoint, call("PATCH", api_path("devices", endpoint, "settings"), json_body={"profile": board}), as_json)

    @devices_app.command("set-figures")
    @one_line_errors
    def set_figures(endpoint: str,
                    sram_free: Optional[int] = typer.Option(None, "--sram-free", min=1,
                                                            help="bytes of SRAM free for ML"),
                    flash_free: Optional[int] = typer.Option(None, "--flash-free", min=1,
                                                             help="bytes of flash free for model packages"),
                    runtime: Optional[list[str]] = typer.Option(None, "--runtime", help="a runtime in its firmware, "
                                                                "'NAME' or 'NAME VERSION' (repeatable)"),
                    clear: bool = typer.Option(False, "--clear", help="forget the stored figures"),
                    as_json: bool = JsonOpt) -> None:
        """Store explicit ML figures for a device; they replace what the device or its profile says."""
        if clear:
            body: dict[str, Any] = {"sram_free": None, "flash_free": None, "runtimes": []}
        else:
            body = {k: v for k, v in (("sram_free", sram_free), ("flash_free", flash_free),
                                      ("runtimes", runtime)) if v}
            if not body:
                raise CliError("give --sram-free, --flash-free and/or --runtime (or --clear)")
        _show(endpoint, call("PATCH", api_path("devices", endpoint, "settings"), json_body=body), as_json)

    @devices_app.command("set-queue")
    @one_line_errors
    def set_queue(endpoint: str,
                  awake: Optional[float] = typer.Option(None, "--awake", min=0.001,
                                                        help="seconds the device listens after it spoke"),
                  queue: Optional[bool] = typer.Option(None, "--queue/--no-queue",
                                                       help="treat it as a queue-mode device, or not"),
                  as_registered: bool = typer.Option(False, "--as-registered",
                                                     help="queue mode as its registration says"),
                  default_awake: bool = typer.Option(False, "--default-awake", help="the server's awake window"),
                  as_json: bool = JsonOpt) -> None:
        """Queue mode for one device: its awake window, and whether it sleeps whatever it registered with."""
        body: dict[str, Any] = {}
        if awake is not None or default_awake:
            body["awake_s"] = None if default_awake else awake
        if queue is not None or as_registered:
            body["queue_mode"] = None if as_registered else queue
        if not body:
            raise CliError("give --awake S, --queue/--no-queue, --as-registered or --default-awake")
        _show(endpoint, call("PATCH", api_path("devices", endpoint, "settings"), json_body=body), as_json)

    @devices_app.command("queue")
    @one_line_errors
    def queue(endpoint: str, limit: int = 20, as_json: bool = JsonOpt) -> None:
        """Requests held for a sleeping device, and what became of the recent ones."""
        q = call("GET", api_path("devices", endpoint, "queue"), params={"limit": limit})
        if as_json:
            sys.stdout.write(json.dumps(q) + "\n")
            return
        out.print(f"{escape(endpoint)}: {len(q['held'])} request(s) held now", highlight=False)
        table = Table("id", "operation", "state", "created", "deadline", "outcome")
        for r in q["history"]:
            op = r["operation"]
            outcome = r["error"] or json.dumps(r["result"].get("content", r["result"].get("value", "")))[:60]
            table.add_row(str(r["id"]), escape(f"{op.get('op')} {op.get('path')}"), r["state"],
                          f"{datetime.fromtimestamp(r['created_at']):%H:%M:%S}",
                          f"{datetime.fromtimestamp(r['deadline']):%H:%M:%S}", escape(outcome or "-"))
        out.print(table)
