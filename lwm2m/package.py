"""Model packages: one signed envelope for every artifact kind (TFLite flatbuffer, Wasm module).

A package is the CBOR array ``[manifest_sign1, artifact]``:

- ``manifest_sign1`` is a COSE_Sign1 message (RFC 9052, CBOR tag 18) signed with Ed25519
  (``alg`` -8 in the protected header) whose payload is the CBOR manifest: ``name``,
  ``version``, ``kind`` (the artifact kind of the backend that built it: "tflite", "wasm", ...;
  a lower-case identifier), ``sha256`` (32 bytes, of the artifact), ``size``, ``arena``
  (bytes of RAM the model needs at run time, beside its runtime's own), ``tensors`` (list of
  maps), ``min_runtime`` ("tflm 2024-06" ...), ``seq`` (the anti-rollback sequence number of the
  package in its model slot, the manifest's ``name``: the server numbers packages in signing
  order) and ``rollback_from`` (absent, or the sequence number a signed rollback manifest
  rolls back from);
- ``artifact`` is the artifact's bytes, unsigned themselves: the signed manifest pins their
  hash, so a device verifies one signature over ~200 bytes and hashes the artifact as it
  stores it.

``open_package`` is what a device does before installing: it checks the structure, the
signature (when it has the server's public keys, resource 33100/0/12) and the hash, and
raises ``PackageError`` with ``reason`` "unsupported" (not a package) or "integrity". Which
kinds a device runs is the device's business: this layer only checks the manifest is well formed.

The trust anchor (resource 33100/0/12) is one raw Ed25519 public key (32 bytes) or several
concatenated (64 bytes during a signing-key rotation: the new key, then the old one); a
package verifies if its signature verifies with any of them (``anchor_keys``).
``sequence_problem`` is the anti-rollback rule a device applies with the highest sequence
number it installed in the manifest's slot: a package must be newer, unless it is a rollback
manifest issued from exactly that number (which then leaves the number where it is, so a
replayed rollback manifest stops working once anything newer was installed).

Written with cbor2 and cryptography directly: pycose 1.1 cannot decode its own messages with
cbor2 6, and COSE_Sign1 with one fixed algorithm is a few lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
PROTECTED = cbor2.dumps({1: ALG_EDDSA})
KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class PackageError(ValueError):
    """``reason``: "unsupported" (not a package of ours) or "integrity" (tampered, wrong key)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kind: str
    sha256: bytes
    size: int
    arena: int = 0
    tensors: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    min_runtime: str = ""
    seq: int = 0
    rollback_from: int | None = None

    def to_cbor(self) -> bytes:
        data = asdict(self)
        data["tensors"] = list(self.tensors)
        if self.rollback_from is None:
            del data["rollback_from"]  # only rollback manifests carry it
        return cbor2.dumps(data, canonical=True)

    @classmethod
    def from_cbor(cls, blob: bytes) -> "Manifest":
        try:
            data = cbor2.loads(blob)
            data["tensors"] = tuple(data.get("tensors", ()))
            manifest = cls(**data)
        except (cbor2.CBORError, TypeError, KeyError, ValueError) as exc:
            raise PackageError("unsupported", f"package manifest is malformed: {exc}") from None
        if not isinstance(manifest.kind, str) or not KIND.fullmatch(manifest.kind) or len(manifest.sha256) != 32:
            raise PackageError("unsupported", f"package manifest has kind {manifest.kind!r} / a bad sha256")
        if not isinstance(manifest.seq, int) or manifest.seq < 0 or not (
                manifest.rollback_from is None or isinstance(manifest.rollback_from, int)):
            raise PackageError("unsupported", f"package manifest has sequence {manifest.seq!r} / rollback_from "
                                              f"{manifest.rollback_from!r}: expected integers")
        return manifest


def _sig_structure(payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", PROTECTED, b"", payload])


def seal(artifact: bytes, manifest: Manifest, key: Ed25519PrivateKey) -> bytes:
    """The package for ``artifact``; ``manifest.sha256`` and ``size`` must describe it."""
    if manifest.sha256 != hashlib.sha256(artifact).digest() or manifest.size != len(artifact):
        raise ValueError("manifest does not describe this artifact (sha256/size)")
    payload = manifest.to_cbor()
    sign1 = cbor2.CBORTag(COSE_SIGN1_TAG, [PROTECTED, {}, payload, key.sign(_sig_structure(payload))])
    return cbor2.dumps([sign1, artifact])


def is_package(blob: bytes) -> bool:
    """Cheap test: a CBOR array of two whose first item is tag 18 (0x82 0xd2)."""
    return blob[:2] == b"\x82\xd2"


KEY_BYTES = 32
MAX_ANCHOR_KEYS = 4


def anchor_keys(anchor: bytes) -> tuple[bytes, ...]:
    """The Ed25519 public keys in a trust-anchor value (one or more raw 32-byte keys)."""
    if not anchor or len(anchor) % KEY_BYTES or len(anchor) > KEY_BYTES * MAX_ANCHOR_KEYS:
        raise ValueError(f"trust anchor of {len(anchor)} bytes: expected 1..{MAX_ANCHOR_KEYS} Ed25519 keys "
                         f"of {KEY_BYTES} bytes")
    return tuple(anchor[i:i + KEY_BYTES] for i in range(0, len(anchor), KEY_BYTES))


class Sequenced(Protocol):
    """What ``sequence_problem`` reads (read-only, so a frozen ``Manifest`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def rollback_from(self) -> int | None: ...


def sequence_problem(manifest: Sequenced, highest: int | None) -> str | None:
    """Why a device that installed sequence ``highest`` in this slot refuses ``manifest`` (a
    manifest, or anything carrying its name, version, seq and rollback_from; None: it takes it)."""
    if highest is None:
        return None
    if manifest.rollback_from is None:
        if manifest.seq > highest:
            return None
        return (f"downgrade refused: {manifest.name} {manifest.version} has sequence {manifest.seq}, this device "
                f"installed sequence {highest} (older or equal needs a signed rollback manifest)")
    if manifest.rollback_from == highest and manifest.seq < highest:
        return None
    return (f"rollback manifest refused: it rolls {manifest.name} back from sequence {manifest.rollback_from} to "
            f"{manifest.seq}; this device is at {highest}")


def _verifies(keys: tuple[bytes, ...], signature: bytes, data: bytes) -> bool:
    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, data)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def open_package(blob: bytes, public_key: bytes | None) -> tuple[Manifest, bytes]:
    """Check a package; return its manifest and artifact. ``public_key`` is the device's trust
    anchor (one or more keys, see ``anchor_keys``); without one only the hash is checked."""
    try:
        sign1, artifact = cbor2.loads(blob)
        if not (isinstance(sign1, cbor2.CBORTag) and sign1.tag == COSE_SIGN1_TAG and len(sign1.value) == 4):
            raise ValueError("first item is not a COSE_Sign1")
        protected, _unprotected, payload, signature = sign1.value
    except (cbor2.CBORError, ValueError, TypeError) as exc:
        raise PackageError("unsupported", f"not a tinymlaas package: {exc}") from None
    if protected != PROTECTED or not isinstance(payload, bytes) or not isinstance(artifact, bytes) \
            or not isinstance(signature, bytes):
        raise PackageError("unsupported", "package is not an Ed25519 COSE_Sign1 over a manifest")
    if public_key is not None:
        try:
            keys = anchor_keys(public_key)
        except ValueError as exc:
            raise PackageError("integrity", f"the device's trust anchor is unusable: {exc}") from None
        if not isinstance(signature, bytes) or not _verifies(keys, signature, _sig_structure(payload)):
            raise PackageError("integrity", "package signature does not verify with the device's key"
                               + ("s" if len(keys) > 1 else "")) from None
    manifest = Manifest.from_cbor(payload)
    if len(artifact) != manifest.size or hashlib.sha256(artifact).digest() != manifest.sha256:
        raise PackageError("integrity", f"artifact sha256/size do not match the manifest of {manifest.name}")
    return manifest, artifact
