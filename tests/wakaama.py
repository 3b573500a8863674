"""Eclipse Wakaama's ``lwm2mclient`` as a test peer: found (or built), started, driven, stopped.

The binary comes from ``.ci/build-wakaama`` (``build/wakaama/udp/lwm2mclient`` under the
checkout, or ``$TINYMLAAS_WAKAAMA``); when it is missing and the source tarball is next to the
checkout, it is built here (a few seconds). The client runs in its own process group with
stdin a pipe (its command line: ``update 123``, ``quit`` ...) and stdout read by a thread into
``lines``; it is always stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / "build" / "wakaama" / "udp" / "lwm2mclient"
SERVER_ID = 123  # the example client's Short Server ID


def binary() -> Path:
    """The lwm2mclient binary; built from ../shared/clients when missing."""
    env = os.environ.get("TINYMLAAS_WAKAAMA")
    if env:
        return Path(env)
    if not BINARY.exists():
        subprocess.run(["bash", str(REPO / ".ci" / "build-wakaama")], check=True, cwd=REPO, timeout=300)
    return BINARY


class Wakaama:
    """One lwm2mclient process registered (or registering) with a server on loopback."""

    def __init__(self, server_port: int, endpoint: str, *, lifetime: int = 300, block_size: int = 1024,
                 extra: tuple[str, ...] = ()) -> None:
        self.endpoint = endpoint
        self.cmd = [str(binary()), "-4", "-h", "127.0.0.1", "-p", str(server_port), "-n", endpoint,
                    "-l", "0", "-t", str(lifetime), "-S", str(block_size), *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> "Wakaama":
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"wakaama {self.endpoint}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def command(self, text: str) -> None:
        """Type a command on the client's command line (``update 123``, ``quit``)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGKILL by PID (no de-registration) and reap; safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process must be able to die
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        if self._reader is not None:
            self._reader.join(5)


def wait_for(cond, seconds: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``cond`` (a plain function) for at most ``seconds``; its last value."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())
