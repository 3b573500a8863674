"""The backends installed in this Python environment, discovered through entry points.

A backend registers itself like any third-party package would, in its ``pyproject.toml``::

    [project.entry-points."tinymlaas.backends"]
    tflm = "compilers.backends.tflm.backend:BACKEND"

``backends()`` loads every entry point of the group ``tinymlaas.backends`` once (the standard
``importlib.metadata`` mechanism; ``refresh()`` forgets what was loaded), checks each object
against the ``Backend`` interface and that its ``name`` is the entry point's name, and keeps
them by name. An entry point that fails to load or is not a backend is left out with one
warning naming it and why, so a broken plug-in never takes the server down; ``problems()``
lists them. Everything else asks here: ``get(name)``, ``deliverable()``, ``for_runtime(name)``,
``for_kind(kind)``, ``recognise(data)``, ``runtime_names()``, ``describe(backend)``.

What it does not do: import any backend by name, or rank backends (the deploy choice does).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Iterable, Mapping

from .base import Backend, BackendUnavailable

GROUP = "tinymlaas.backends"
log = logging.getLogger(__name__)
_problems: dict[str, str] = {}


def _check(ep: EntryPoint, obj: object) -> str | None:
    if not isinstance(obj, Backend):
        missing = [a for a in ("name", "kind", "runtimes", "precisions", "build", "measure", "fit",
                               "device_runtime") if not hasattr(obj, a)]
        return f"{ep.value} is not a backend (lacks {', '.join(missing) or 'the Backend interface'})"
    if obj.name != ep.name:
        return f"{ep.value} calls itself {obj.name!r}, registered as {ep.name!r}"
    return None


def _discover(points: Iterable[EntryPoint]) -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    _problems.clear()
    for ep in sorted(points, key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, not fatal
            _problems[ep.name] = f"{ep.value} does not load: {type(exc).__name__}: {exc}"
        else:
            if (why := _check(ep, obj)) is None:
                if ep.name in found:
                    _problems[ep.name] = f"{ep.value}: a second backend named {ep.name!r} (kept the first)"
                    continue
                found[ep.name] = obj
                continue
            _problems[ep.name] = why
        log.warning("backend %r left out: %s", ep.name, _problems[ep.name])
    return found


@lru_cache(maxsize=1)
def _loaded() -> Mapping[str, Backend]:
    return _discover(entry_points(group=GROUP))


def backends() -> Mapping[str, Backend]:
    """Every installed backend by name, sorted by name."""
    return _loaded()


def refresh() -> None:
    """Forget the loaded backends: the next call discovers the entry points again."""
    _loaded.cache_clear()


def problems() -> Mapping[str, str]:
    """Entry points of the group that were left out, and why."""
    _loaded()
    return dict(_problems)


def names() -> tuple[str, ...]:
    return tuple(backends())


def get(name: str) -> Backend:
    found = backends().get(name)
    if found is None:
        raise BackendUnavailable(f"backend {name!r}: expected one of {', '.join(backends()) or 'none installed'}")
    return found


def deliverable() -> Mapping[str, Backend]:
    """The backends whose artifacts a device runs (an artifact kind and at least one runtime)."""
    return {n: b for n, b in backends().items() if b.kind is not None and b.runtimes}


def for_runtime(runtime: str) -> tuple[Backend, ...]:
    """The deliverable backends whose artifacts ``runtime`` runs."""
    return tuple(b for b in deliverable().values() if runtime in b.runtimes)


def for_kind(kind: str) -> Backend | None:
    """The backend that makes package kind ``kind``."""
    return next((b for b in deliverable().values() if b.kind is not None and b.kind.name == kind), None)


def recognise(data: bytes) -> Backend | None:
    """The backend whose artifact ``data`` is, by content."""
    return next((b for b in deliverable().values() if b.kind is not None and b.kind.recognises(data)), None)


def describe(b: Backend) -> dict[str, object]:
    """A backend as the admin API and ``tinymlaas backends`` show it."""
    kind = None if b.kind is None else {"name": b.kind.name, "media_type": b.kind.media_type, "suffix": b.kind.suffix}
    return {"name": b.name, "title": getattr(b, "title", b.name), "kind": kind, "runtimes": list(b.runtimes),
            "precisions": list(b.precisions), "deliverable": b.name in deliverable(),
            "board_specific": b.board_specific, "operator_list": b.operator_list, "min_runtime": b.min_runtime,
            "module": type(b).__module__}


def runtime_names() -> tuple[str, ...]:
    """Every runtime some installed backend targets, in backend order."""
    seen: dict[str, None] = {}
    for b in deliverable().values():
        seen.update(dict.fromkeys(b.runtimes))
    return tuple(seen)


__all__ = ["GROUP", "backends", "deliverable", "describe", "for_kind", "for_runtime", "get", "names", "problems",
           "recognise", "refresh", "runtime_names"]
