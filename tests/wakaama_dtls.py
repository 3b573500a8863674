"""Eclipse Wakaama's ``lwm2mclient_tinydtls`` (DTLS-PSK, bootstrap) as a test peer.

Built by ``.ci/build-wakaama-dtls`` into ``build/wakaama/dtls/`` (or ``$TINYMLAAS_WAKAAMA_DTLS``),
built here when missing and the tarball is next to the checkout. It runs in its own process
group with stdin a pipe (it reads commands there) and its output collected by a thread; it is
always stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / "build" / "wakaama" / "dtls" / "lwm2mclient_tinydtls"
TARBALL_DIR = REPO.parent / "shared" / "clients"


def binary() -> Path | None:
    env = os.environ.get("TINYMLAAS_WAKAAMA_DTLS")
    if env:
        return Path(env)
    if not BINARY.exists() and any(TARBALL_DIR.glob("wakaama-*.tar.gz")):
        subprocess.run(["bash", str(REPO / ".ci" / "build-wakaama-dtls")], check=True, cwd=REPO, timeout=600,
                       capture_output=True)
    return BINARY if BINARY.exists() else None


class WakaamaDtls:
    def __init__(self, port: int, endpoint: str, *, identity: str | None = None, key_hex: str | None = None,
                 bootstrap: bool = False, lifetime: int = 300) -> None:
        exe = binary()
        assert exe is not None, "lwm2mclient_tinydtls is not built (.ci/build-wakaama-dtls)"
        self.cmd = [str(exe), "-4", "-h", "127.0.0.1", "-p", str(port), "-n", endpoint, "-l", "0",
                    "-t", str(lifetime)]
        if identity is not None and key_hex is not None:
            self.cmd += ["-i", identity, "-s", key_hex]
        if bootstrap:
            self.cmd.append("-b")
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "WakaamaDtls":
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
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

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        if self._reader is not None:
            self._reader.join(5)
