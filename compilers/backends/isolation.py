"""Run one call of native model code in a forked child: its C-level output captured, a time limit,
and a crash costing only that call.

``isolated(fn, args, timeout_s) -> Outcome``: the child points fds 1 and 2 at a temporary log
(unbuffered, so a segfault keeps what was printed), calls ``fn(*args)`` and pickles the result
back through a pipe; the parent kills it after ``timeout_s``. ``Outcome.status`` is "ok" (value:
the return value), "error" (a ``RuntimeFailure``: value ``(result, message)``), "exception"
(anything else: ``(qualified type name, text)``), "crash" (a signal or exit status) or
"timeout". ``child_log()`` gives the child everything it printed so far. tflite-micro
segfaults on a too-small arena and a Wasm module may loop forever: this is why both the TFLM
arena measurement and the device runtimes call their runtime through here.

Why written here: ``multiprocessing`` cannot redirect a child's C-level stdout or survive a
segfault mid-pickle, and the standard library has no fork-with-deadline helper. Needs POSIX
``os.fork``; call it from a process without running threads (the simulator's worker process,
a build worker), never from an asyncio event loop's thread.

What it does not do: pool workers (the simulator's model runner does) or interpret outcomes.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import select
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from .base import RuntimeFailure

__all__ = ["Outcome", "child_log", "isolated", "reason", "returned"]

LOG_LIMIT = 1 << 16  # bytes of a child's log kept


@dataclass
class Outcome:
    status: str  # ok, error, exception, crash, timeout
    value: Any
    log: str


_child_log_path: str | None = None
_LIBC = ctypes.CDLL(None)  # this process's C library: fflush, setvbuf


def child_log() -> str:
    """In a child of ``isolated``: everything it printed so far (C stdio flushed)."""
    _LIBC.fflush(None)
    if _child_log_path is None:
        raise RuntimeError("child_log() is only meaningful inside isolated()")
    return _read(_child_log_path)


def _run_child(fn: Callable[..., Any], args: tuple[Any, ...], fd: int, w: int, log_path: str) -> None:
    global _child_log_path
    code = 0
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        _LIBC.setvbuf(ctypes.c_void_p.in_dll(_LIBC, "stdout"), None, 2, 0)  # _IONBF: survive a crash
        if faulthandler.is_enabled():  # a crash's Python trace goes to the log, not the parent's terminal
            faulthandler.enable(file=2)
        _child_log_path = log_path
        payload: tuple[str, Any]
        try:
            payload = ("ok", fn(*args))
        except RuntimeFailure as e:
            payload = ("error", (e.result, e.message))
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            name = type(e).__qualname__
            if type(e).__module__ != "builtins":
                name = f"{type(e).__module__}.{name}"
            payload = ("exception", (name, str(e)))
        view = memoryview(pickle.dumps(payload))
        while view:
            view = view[os.write(w, view):]
    except BaseException:  # noqa: BLE001
        code = 70
    finally:
        os._exit(code)


def isolated(fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Outcome:
    """Run ``fn(*args)`` in a forked child, fds 1 and 2 into a log; kill it after timeout_s."""
    fd, log_path = tempfile.mkstemp(prefix="tinyml-", suffix=".log")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        _run_child(fn, args, fd, w, log_path)
    os.close(w)
    os.close(fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    poller = select.poll()
    poller.register(r, select.POLLIN | select.POLLHUP)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return Outcome("timeout", f"did not finish within {timeout_s:g} s", _read(log_path))
            if poller.poll(left * 1000):
                chunk = os.read(r, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        log = _read(log_path)
    finally:
        os.close(r)
        os.unlink(log_path)
    if chunks:
        kind, value = pickle.loads(b"".join(chunks))
        return Outcome(kind, value, log)
    signalled = os.WIFSIGNALED(status)
    how = signal.Signals(os.WTERMSIG(status)).name if signalled else f"exit status {os.WEXITSTATUS(status)}"
    return Outcome("crash", how, log)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(LOG_LIMIT).decode("utf-8", "replace")


def reason(log: str, skip: Callable[[str], bool] = lambda _line: False) -> str:
    """The first lines of a runtime's complaint (lines ``skip`` accepts left out)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not skip(ln)]
    return "; ".join(lines[:3]) or "no message"


def returned(o: Outcome, runtime: str, skip: Callable[[str], bool] = lambda _line: False) -> Any:
    """The value of an "ok" outcome; any other outcome as a ``RuntimeFailure`` (runtime-error)."""
    if o.status == "ok":
        return o.value
    if o.status == "error":
        raise RuntimeFailure(*o.value)
    if o.status == "crash":
        raise RuntimeFailure("runtime-error", f"the runtime crashed ({runtime}, {o.value}): {reason(o.log, skip)}")
    if o.status == "timeout":
        raise RuntimeFailure("runtime-error", f"{runtime} {o.value}; the run was stopped")
    raise RuntimeFailure("runtime-error", f"{runtime} failed: {o.value[0]}: {o.value[1]}")
