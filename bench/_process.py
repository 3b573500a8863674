"""Process helpers shared by the benchmarks: /proc readers, a server subprocess, a batch of
device credentials.

``bench/registrations.py`` imports this as ``_process`` (its own directory is sys.path[0]);
``bench/simulator.py`` as ``bench._process`` (it puts the repository root first instead, so
that its own name does not shadow the ``simulator`` package).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# -- /proc ----------------------------------------------------------------------------------

def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proc_cpu_s(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def system_cpu_s() -> float:
    """Busy CPU time of the whole machine (all cores), in seconds, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v[:8]) - v[3] - v[4]  # minus idle, iowait
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return float("nan")


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def kb(b: float) -> float:
    return b / 1024


# -- subprocesses ---------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the benchmark dies (even by SIGKILL). Linux only."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            print(f"could not raise the open-files limit from {soft}: {exc}", file=sys.stderr)


def repo_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class ServerProcess:
    """A server subprocess whose stdout carries ``coap://127.0.0.1:PORT``; stopped on exit.

    ``cmd`` is its command line, ``env`` variables set on top of :func:`repo_env` (which also
    gets PYTHONUNBUFFERED=1); its output goes to ``<workdir>/<name>.stdout`` and ``.stderr``;
    ``label`` names it in errors. :meth:`tinymlaas` builds one for ``python -m tinymlaas serve``.
    """

    def __init__(self, cmd: list[str], workdir: Path, env: dict[str, str] | None = None,
                 name: str = "server", label: str = "the server") -> None:
        self.cmd = cmd
        self.env = dict(env or {})
        self.workdir = workdir
        self.home = workdir / "home"  # TINYMLAAS_HOME, for a tinymlaas server
        self.label = label
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"

    @classmethod
    def tinymlaas(cls, workdir: Path, name: str = "server", label: str = "the server") -> ServerProcess:
        """``python -m tinymlaas serve`` on 127.0.0.1 (CoAP and admin API on free ports), state in workdir."""
        cmd = [sys.executable, "-m", "tinymlaas", "serve", "--coap", f"{HOST}:0", "--api", f"{HOST}:0",
               "--db", f"sqlite:///{workdir / 'bench.db'}", "--no-capabilities"]
        return cls(cmd, workdir, {"TINYMLAAS_HOME": str(workdir / "home")}, name=name, label=label)

    def start(self, timeout_s: float = 60.0) -> int:
        env = repo_env(PYTHONUNBUFFERED="1", **self.env)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
                                         env=env, start_new_session=True, preexec_fn=_die_with_parent)
        end = time.monotonic() + timeout_s
        marker = f"coap://{HOST}:"
        while time.monotonic() < end:
            for line in self.out_path.read_text(errors="replace").splitlines(keepends=True):
                m = re.search(re.escape(marker) + r"(\d+)", line)
                if m and line.endswith("\n"):  # a whole line: the port is complete
                    self.port = int(m.group(1))
                    return self.port
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before printing its port:\n"
                                   + self.tail())
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} printed no {marker}PORT within {timeout_s:.0f} s:\n" + self.tail())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def api(self) -> tuple[str, str]:
        """A tinymlaas server's admin API: (url, token), from its home's api.json."""
        data = json.loads((self.home / "api.json").read_text())
        return data["url"], data["token"]

    def coaps_port(self) -> int:
        """The coaps port in a tinymlaas server's start-up line (it was started with ``--coaps``)."""
        text = self.out_path.read_text(errors="replace")
        m = re.search(r"coaps://" + re.escape(HOST) + r":(\d+)", text)
        if m is None:
            raise RuntimeError(f"{self.label} printed no coaps://{HOST}:PORT: {text[-300:]!r}")
        return int(m.group(1))

    def import_credentials(self, csv: Path, expected: int) -> float:
        """``tinymlaas credentials import CSV`` against this server, as an operator imports a
        production batch (one API request, all rows or none); the seconds it took."""
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tinymlaas", "credentials", "import", str(csv)], cwd=REPO,
                              env=repo_env(TINYMLAAS_HOME=str(self.home)), capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0 or f"imported {expected} credentials" not in done.stdout:
            raise RuntimeError(f"tinymlaas credentials import failed (exit {done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()[-500:]}")
        return time.perf_counter() - t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        lines = []
        for p in (self.out_path, self.err_path):
            try:
                lines += p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(lines)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


# -- credentials ----------------------------------------------------------------------------

def psk_batch(path: Path, endpoints: list[str]) -> dict[str, tuple[bytes, bytes]]:
    """A production batch's CSV (``endpoint,identity,key``: the endpoint name as identity, one
    random 16-byte PSK each, in hex) written to ``path`` (mode 0600); endpoint -> (identity, key)."""
    creds = {ep: (ep.encode(), os.urandom(16)) for ep in endpoints}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("endpoint,identity,key\n")
        f.writelines(f"{ep},{ident.decode()},{key.hex()}\n" for ep, (ident, key) in creds.items())
    return creds


# -- the end of a benchmark run -------------------------------------------------------------

def tear_down(children: list[Any], server: Any, workdir: Path, keep: bool) -> None:
    """Cancel the alarm, SIGKILL simulator children not reaped yet, stop the server, and remove
    the work directory (or say where it is kept)."""
    signal.alarm(0)
    for child in children:
        if child.returncode is None:  # not reaped: still ours
            try:
                os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    server.stop()
    if keep:
        print(f"kept {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def run_main(main: Callable[[], int]) -> None:
    """``sys.exit(main())``; Ctrl-C says the processes were stopped and exits 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); server and simulators stopped", file=sys.stderr)
        sys.exit(130)
