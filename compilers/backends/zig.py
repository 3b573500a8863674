"""The zig toolchain (clang, wasm-ld, lld for Arm and RISC-V) from the ``ziglang`` PyPI package,
shared by the Wasm backend (C -> wasm32) and the C backend's section measurement (C -> a
board's core): ``zig_cc(args, cwd, what, error)`` runs ``python -m ziglang cc`` and turns its
diagnostics into one readable line.

Why ziglang: it is the one C toolchain installable from PyPI with no system packages (clang,
wasm-ld and the ARM/RISC-V targets in one wheel), so a server or CI machine gets it with pip.

What it does not do: choose flags (each caller does), or cache builds.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from ..errors import CompilerError

__all__ = ["TIMEOUT_S", "zig_cc"]

TIMEOUT_S = 300
_MAX_DIAGNOSTICS = 5
_UNDEFINED = re.compile(r"undefined symbol: (\S+)")
_UNEXPORTED = re.compile(r"symbol exported via --export not found: (\S+)")
_DIAGNOSTIC = re.compile(r"(error|fatal error): ")


def zig_cc(args: list[str], cwd: Path, what: str, error: type[CompilerError]) -> str:
    """Run ``python -m ziglang cc <args>`` in ``cwd``; its stderr, or ``error`` naming ``what``."""
    if importlib.util.find_spec("ziglang") is None:
        raise error(f"{what}: the ziglang package is not installed (pip install ziglang)")
    try:
        done = subprocess.run([sys.executable, "-m", "ziglang", "cc", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise error(f"{what}: zig cc ran longer than {TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise error(f"{what}: {_diagnostics(done.stderr, cwd) or 'zig cc failed with no message'}")
    return done.stderr


def _diagnostics(stderr: str, cwd: Path) -> str:
    """The error lines of a clang/wasm-ld run, with temporary paths made readable."""
    undefined = sorted(set(_UNDEFINED.findall(stderr)))
    if undefined:
        names = ", ".join(f"env.{n}" for n in undefined)
        return (f"module imports {names}: the sandbox grants no imports (the C source calls "
                f"{', '.join(undefined)} without defining it)")
    missing = sorted(set(_UNEXPORTED.findall(stderr)))
    if missing:
        return (f"the C source does not define {', '.join(missing)}: Wasm module lacks the "
                "function export(s) tinyml ABI v1 requires")
    text = stderr.replace(str(cwd) + "/", "")
    lines = [ln.strip() for ln in text.splitlines() if _DIAGNOSTIC.search(ln)]
    if not lines:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    more = f" (+{len(lines) - _MAX_DIAGNOSTICS} more)" if len(lines) > _MAX_DIAGNOSTICS else ""
    return "; ".join(lines[:_MAX_DIAGNOSTICS]) + more
