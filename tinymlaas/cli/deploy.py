"""CLI: ``tinymlaas deploy``, ``tinymlaas deployments list|show``, ``tinymlaas rollback``.

``deploy ENDPOINT MODEL`` asks the running server to deploy (``--dry-run``: only show the
decision; ``--after-current``: queue it behind the device's deployment in progress, which is
otherwise a one-line error naming it), then follows the deployment's state with a progress bar
until it ends; the exit code is 0 only when it succeeded. ``deployments show`` prints the decision with every
candidate's numbers, the delivery and the inference the device reported.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compilers.backends import registry
from tinymlaas.cli.client import CliError, OneLineErrors, api_path, call
from tinymlaas.cli.terminal import console

out = console()
deployments_app = typer.Typer(help="Model deployments: decisions, deliveries, results.", no_args_is_help=True)
STEPS = ("pending", "queued", "deciding", "compiling", "delivering", "installing", "activating", "verifying",
         "succeeded")
TERMINAL = ("succeeded", "failed", "cancelled")


def kb(n: Any) -> str:
    return f"{n:,} B" if isinstance(n, int) else "-"


def candidates_table(decision: dict[str, Any]) -> Table:
    chosen = decision.get("chosen") or {}
    table = Table("", "backend", "precision", "runtime", "package (flash)", "flash usable", "SRAM need",
                  "SRAM usable", "latency est.", "verdict",
                  title=f"candidates (safety margin {decision.get('margin', 0):.0%})")
    for c in decision.get("candidates", []):
        mark = "→" if (c["backend"], c["precision"]) == (chosen.get("backend"), chosen.get("precision")) else ""
        latency = f"{c['latency_ms']:,.1f} ms" if c.get("latency_ms") is not None else "-"
        table.add_row(mark, c["backend"], c["precision"], c["runtime"],
                      kb(c.get("flash_bytes")), kb(c.get("flash_usable_bytes")),
                      kb(c.get("ram_bytes")), kb(c.get("ram_usable_bytes")), latency,
                      "fits" if c["fits"] else escape("; ".join(c["problems"])))
    return table


def show_deployment(d: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(d["state"], "cyan")
    out.print(f"[bold]deployment {d['id']}[/bold] ({d['kind']}): {escape(d['model'])}:{escape(d['version'])} -> "
              f"{escape(d['endpoint'])}: [{colour}]{d['state']}[/{colour}]", highlight=False)
    if d.get("error"):
        result = f" (Update Result {d['result_code']})" if d.get("result_code") else ""
        out.print(f"  error: {escape(d['error'])}" + result, highlight=False)
    if d.get("backend"):
        out.print(f"  {d['backend']} {d['precision']}, package {kb(d.get('package_size'))}, artifact sha256 "
                  f"{(d.get('artifact_sha256') or '-')[:16]}, "
                  f"{d.get('method') or '-'} via {d.get('object_path') or '-'}",
                  highlight=False)
    if d.get("decision", {}).get("candidates"):
        target = d["decision"].get("target", {})
        if target:
            out.print(f"  device: {target.get('profile') or target.get('core')}, "
                      f"SRAM free {kb(target.get('sram_free'))}, "
                      f"flash free {kb(target.get('flash_free'))}, runtimes {', '.join(target.get('runtimes', []))}",
                      highlight=False)
        out.print(candidates_table(d["decision"]))
    inf = d.get("inference") or {}
    slot = inf.get("slot") or {}
    if slot:
        seen = "".join(f", {label} {slot[k]!r}" for k, label in (("pkg_name", "PkgName"), ("pkg_version", "PkgVersion"))
                       if slot.get(k))
        out.print(f"  device reports {slot.get('path')}: state {slot.get('state')}, Update Result "
                  f"{slot.get('update_result', '-')}" + (", active" if slot.get("active") else "")
                  + (f", {slot['registration']} after the update" if slot.get("registration") else "")
                  + escape(seen), highlight=False)
    if inf.get("count"):
        out.print(f"  inference: {inf['count']} run(s), latency {inf.get('latency_us')} µs, "
                  f"arena {kb(inf.get('arena'))}, "
                  f"output {str(inf.get('output'))[:48]}", highlight=False)
    prev = d.get("previous") or {}
    if prev.get("name"):
        out.print(f"  previous model: {prev['name']}:{prev.get('version')} at {prev.get('object_path') or '-'}",
                  highlight=False)
    for h in d.get("history", []):
        out.print(f"  {datetime.fromtimestamp(h['ts']):%H:%M:%S.%f}"[:-3] + f" {h.get('state', '')}"
                  + (f" {escape(str(h['error']))}" if h.get("error") else ""), highlight=False)


def follow(deployment_id: int, timeout: float) -> dict[str, Any]:
    """Poll the deployment and show its step as a progress bar until it ends (or ``timeout``)."""
    status = console(stderr=True)
    end = time.monotonic() + timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"),
                  TimeElapsedColumn(), console=status, transient=True) as bar:
        task = bar.add_task(f"deployment {deployment_id}", total=len(STEPS) - 1, step="pending")
        while True:
            d = call("GET", api_path("deployments", deployment_id))
            step = STEPS.index(d["state"]) if d["state"] in STEPS else bar.tasks[0].completed
            bar.update(task, completed=step, step=d["state"])
            if d["state"] in TERMINAL:
                return d  # type: ignore[no-any-return]
            if time.monotonic() > end:
                raise CliError(f"deployment {deployment_id} still {d['state']} after {timeout:g} s "
                               f"(it goes on: tinymlaas deployments show {deployment_id})")
            time.sleep(0.3)


def register(app: typer.Typer, one_line_errors: OneLineErrors) -> None:
    JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")

    @app.command()
    @one_line_errors
    def deploy(endpoint: str, model: str = typer.Argument(..., help="NAME, NAME:VERSION or a sha256 prefix"),
               backend: Optional[str] = typer.Option(
                   None, help=f"an installed deliverable backend: {', '.join(registry.deliverable())} "
                   "(default: chosen to fit)"),
               precision: Optional[str] = typer.Option(None, help="float32 or int8 (default: chosen to fit)"),
               after_current: bool = typer.Option(False, "--after-current", help="the device has a deployment in "
                                                  "progress: queue this one behind it (else refused)"),
               push: bool = typer.Option(False, "--push", help="push the package (Block1) instead of a Package URI"),
               obj: Optional[int] = typer.Option(None, "--object",
                                                 help="9 (Software Management) or 5 (Firmware Update)"),
               margin: float = typer.Option(10.0, help="safety margin on free SRAM and flash, percent"),
               sram_free: Optional[int] = typer.Option(None, "--sram-free", min=1, help="bytes of SRAM free for ML "
                                                       "(over what the device or its profile says)"),
               flash_free: Optional[int] = typer.Option(None, "--flash-free", min=1,
                                                        help="bytes of flash free for model packages"),
               runtime: Optional[list[str]] = typer.Option(None, "--runtime", help="a runtime in its firmware, "
                                                           "'NAME' or 'NAME VERSION' (repeatable)"),
               dry_run: bool = typer.Option(False, "--dry-run", help="show the decision, deliver nothing"),
               timeout: float = typer.Option(600.0, help="seconds to follow the deployment"),
               as_json: bool = JsonOpt) -> None:
        """Deploy a registered model to a device: decide, compile, sign, deliver, verify."""
        body = {"endpoint": endpoint, "model": model, "backend": backend, "precision": precision,
                "method": "push" if push else "pull", "object_id": obj, "margin": margin / 100, "wait": False,
                "sram_free": sram_free, "flash_free": flash_free, "runtimes": runtime or []}
        if dry_run:
            plan = call("POST", "/deployments/plan", json_body=body, timeout=timeout)
            if as_json:
                sys.stdout.write(json.dumps(plan) + "\n")
                return
            c = plan["chosen"]
            out.print(f"{escape(plan['model'])} -> {escape(endpoint)}: would deploy {c['backend']} {c['precision']} "
                      f"({kb(c.get('flash_bytes'))} package, {kb(c.get('ram_bytes'))} SRAM)", highlight=False)
            out.print(candidates_table(plan))
            return
        d = follow(call("POST", "/deployments", json_body=body | {"after_current": after_current}, timeout=60)["id"],
                   timeout)
        if as_json:
            sys.stdout.write(json.dumps(d, default=str) + "\n")
        else:
            show_deployment(d)
        if d["state"] != "succeeded":
            raise typer.Exit(1)

    @app.command()
    @one_line_errors
    def rollback(endpoint: str, as_json: bool = JsonOpt) -> None:
        """Re-activate the model that ran before the current one on a device."""
        d = call("POST", api_path("devices", endpoint, "rollback"), timeout=600)
        if as_json:
            sys.stdout.write(json.dumps(d, default=str) + "\n")
        else:
            show_deployment(d)
        if d["state"] != "succeeded":
            raise typer.Exit(1)

    @deployments_app.command("list")
    @one_line_errors
    def list_(endpoint: Optional[str] = typer.Option(None, help="only this device"),
              campaign: Optional[int] = typer.Option(None, help="only this campaign"),
              limit: int = 50, as_json: bool = JsonOpt) -> None:
        """Deployments, newest first."""
        params: dict[str, Any] = {"limit": limit}
        params.update({k: v for k, v in (("endpoint", endpoint), ("campaign", campaign)) if v is not None})
        rows = call("GET", "/deployments", params=params)
        if as_json:
            sys.stdout.write(json.dumps(rows, default=str) + "\n")
            return
        table = Table("id", "endpoint", "model", "state", "backend", "precision", "package", "via", "campaign",
                      "started", "error")
        for r in rows:
            table.add_row(str(r["id"]), escape(r["endpoint"]), escape(f"{r['model']}:{r['version']}"), r["state"],
                          r["backend"] or "-", r["precision"] or "-", kb(r["package_size"]), r["object_path"] or "-",
                          str(r["campaign_id"] or "-"), datetime.fromtimestamp(r["created_at"]).strftime("%H:%M:%S"),
                          escape((r["error"] or "")[:80]))
        out.print(table)

    @deployments_app.command("show")
    @one_line_errors
    def show(deployment_id: int, as_json: bool = JsonOpt) -> None:
        """One deployment: the decision with every candidate, the delivery, the inference, its history."""
        d = call("GET", api_path("deployments", deployment_id))
        if as_json:
            sys.stdout.write(json.dumps(d, default=str) + "\n")
            return
        show_deployment(d)

    @deployments_app.command("cancel")
    @one_line_errors
    def cancel(deployment_id: int) -> None:
        """Cancel a deployment in flight (the device keeps the model it runs)."""
        call("POST", api_path("deployments", deployment_id, "cancel"))
        out.print("cancelling")

    app.add_typer(deployments_app, name="deployments")
