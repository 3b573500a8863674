"""Model packages: one signed envelope for every artifact kind (TFLite flatbuffer, Wasm module).

A package is the CBOR array ``[manifest_sign1, artifact]``:

- ``manifest_sign1`` is a COSE_Sign1 message (RFC 9052, CBOR tag 18) signed with Ed25519
  (``alg`` -8 in the protected header) whose payload is the CBOR manifest: ``name``,
  ``version``, ``kind`` (the artifact kind of the backend that built it: "tflite", "wasm", ...;
  a lower-case identifier), ``sha256`` (32 bytes, of the artifact), ``size``, ``arena``
  (bytes of RAM the model needs at run time, beside its runtime's own), ``tensors`` (list of
  maps), ``min_runtime`` ("tflm 2024-06" ...);
- ``artifact`` is the artifact's bytes, unsigned themselves: the signed manifest pins their
  hash, so a device verifies one signature over ~200 bytes and hashes the artifact as it
  stores it.

``open_package`` is what a device does before installing: it checks the structure, the
signature (when it has the server's public key, resource 33100/0/12) and the hash, and
raises ``PackageError`` with ``reason`` "unsupported" (not a package) or "integrity". Which
kinds a device runs is the device's business: this layer only checks the manifest is well formed.

Written with cbor2 and cryptography directly: pycose 1.1 cannot decode its own messages with
cbor2 6, and COSE_Sign1 with one fixed algorithm is a few lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

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

    def to_cbor(self) -> bytes:
        data = asdict(self)
        data["tensors"] = list(self.tensors)
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


def open_package(blob: bytes, public_key: bytes | None) -> tuple[Manifest, bytes]:
    """Check a package; return its manifest and artifact. Without a key only the hash is checked."""
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
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, _sig_structure(payload))
        except (InvalidSignature, ValueError):
            raise PackageError("integrity", "package signature does not verify with the device's key") from None
    manifest = Manifest.from_cbor(payload)
    if len(artifact) != manifest.size or hashlib.sha256(artifact).digest() != manifest.sha256:
        raise PackageError("integrity", f"artifact sha256/size do not match the manifest of {manifest.name}")
    return manifest, artifact
