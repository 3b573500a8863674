"""Eclipse Wakaama's ``lwm2mclient_tinydtls`` (DTLS-PSK, bootstrap) as a test peer.

Built by ``.ci/build-wakaama-dtls`` into ``build/wakaama/dtls/`` (or ``$TINYMLAAS_WAKAAMA_DTLS``),
built here when missing and the tarball is next to the checkout. Started, driven and stopped as
``tests.wakaama.Wakaama`` (its own process group, stdin its command line, stopped by its PID).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.wakaama import Wakaama

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


class WakaamaDtls(Wakaama):
    """``lwm2mclient_tinydtls`` with a PSK (``identity``, ``key_hex``) and/or bootstrap (``-b``);
    a context manager: started on entry, killed by its PID on exit (``Wakaama.stop``)."""

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
        self.endpoint = endpoint
        self.proc = None
        self.lines = []
        self._reader = None

    def __enter__(self) -> "WakaamaDtls":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
