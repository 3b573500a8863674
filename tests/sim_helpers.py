"""Helpers for the simulator tests: small Wasm models, packages, waiting on device state."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path as FsPath

import wasmtime
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lwm2m.package import Manifest, seal
from lwm2m.path import Path
from tinymlaas.server.device_client import DeviceTimeout

SHARED_MODELS = FsPath(__file__).resolve().parents[2] / "shared" / "models"

# ABI v1: one 4-byte input at 0, one 4-byte output at 16, invoke adds 1 to each byte.
ADD_ONE_WAT = """
(module
  (memory (export "memory") {pages})
  (func (export "tinyml_abi_version") (result i32) i32.const 1)
  (func (export "input_count") (result i32) i32.const 1)
  (func (export "output_count") (result i32) i32.const 1)
  (func (export "input_ptr") (param i32) (result i32) i32.const 0)
  (func (export "input_size") (param i32) (result i32) i32.const 4)
  (func (export "output_ptr") (param i32) (result i32) i32.const 16)
  (func (export "output_size") (param i32) (result i32) i32.const 4)
  (func (export "invoke") (result i32) (local i32)
    (loop $l
      (i32.store8 offset=16 (local.get 0) (i32.add (i32.load8_u (local.get 0)) (i32.const 1)))
      (local.set 0 (i32.add (local.get 0) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get 0) (i32.const 4))))
    i32.const 0)
  {data})
"""


def add_one_wasm(pages: int = 1, pad: int = 0) -> bytes:
    """The add-one model; ``pad`` bytes of constant data make the module that much bigger."""
    data = f'(data (i32.const 1024) "{"x" * pad}")' if pad else ""
    return bytes(wasmtime.wat2wasm(ADD_ONE_WAT.format(pages=pages, data=data)))


def keypair() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


_SEQ = itertools.count(1)


def package(artifact: bytes, key: Ed25519PrivateKey, name: str = "add-one", version: str = "1",
            seq: int | None = None, rollback_from: int | None = None) -> bytes:
    """A signed package; each one gets the next anti-rollback sequence number unless ``seq`` is given."""
    kind = "tflite" if artifact[4:8] == b"TFL3" else "wasm"
    manifest = Manifest(name, version, kind, hashlib.sha256(artifact).digest(), len(artifact),
                        seq=next(_SEQ) if seq is None else seq, rollback_from=rollback_from)
    return seal(artifact, manifest, key)


async def wait_value(server, ep: str, path: Path, want, timeout: float = 20.0):
    """Read ``path`` over the wire until it is one of ``want`` (a value or a set)."""
    want = want if isinstance(want, (set, frozenset)) else {want}
    value = None
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        try:
            value = (await server.read(ep, path, timeout=3)).get(path)
        except DeviceTimeout:  # a faulty link or a rebooting device: ask again
            continue
        if value in want:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{ep}{path} is {value!r}, waited for {want}")
