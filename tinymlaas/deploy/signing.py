"""The server's package-signing key, and sealing compiled artifacts into signed packages.

The Ed25519 key pair is created on first start in the data directory (``signing-key.pem``,
PKCS#8, file mode 0600) and loaded afterwards, so devices that were given the public key keep
accepting this server's packages across restarts. Devices learn the public key through the ML
Capability object (resource 33100/0/12, written by the deployer before the first delivery) or
at bootstrap. ``seal`` wraps a ``Built`` artifact in the one envelope of
``lwm2m.package`` (COSE_Sign1 over a CBOR manifest, plus the artifact): the manifest's
kind is the backend's artifact kind, its ``arena`` the RAM the build measured, its minimum
runtime the artifact's own; packages are cached per artifact key (Ed25519 signatures are
deterministic, so the bytes would not change).

Each package carries the anti-rollback sequence number it is sealed with (``seq``, from
``tinymlaas.deploy.package_trust``) and, for a rollback manifest, ``rollback_from``. Rotating
the key with an overlap period is ``package_trust.SigningKeys``; ``anchor`` is what devices
are given as their trust anchor (here: the one public key).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compilers.backends import registry
from tinymlaas.deploy.cache import Built
from lwm2m.package import Manifest, seal as seal_package
from tinymlaas.registry import ModelEntry

KEY_FILE = "signing-key.pem"


def package_version(entry: ModelEntry, built: Built) -> str:
    return f"{entry.version}+{built.sha256[:8]}"


def model_version(package_version: object) -> str:
    """The registry version in a package version (``3+d78d7137`` -> ``3``)."""
    return str(package_version or "").split("+", 1)[0]


class ServerKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._sealed: dict[tuple[str, str, str, int, int | None], bytes] = {}

    @classmethod
    def load_or_create(cls, data_dir: Path, file: Path | None = None) -> "ServerKey":
        """The key in ``file`` (default ``signing-key.pem`` in ``data_dir``), created there if missing."""
        path = file or data_dir / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return cls(key)

    @classmethod
    def of_this_process(cls) -> "ServerKey":
        """A key kept nowhere, for the size of a package where the server's key is not at hand
        (``models inspect`` without a server): an Ed25519 signature is 64 bytes whatever the
        key, so the package has the server's length. Never for packages a device receives."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def anchor(self) -> bytes:
        """The trust-anchor value for devices' /33100/0/12."""
        return self.public

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public).hexdigest()[:16]

    def seal(self, built: Built, entry: ModelEntry, seq: int = 0, rollback_from: int | None = None) -> bytes:
        """The signed package for ``built`` (cached per artifact, model name and version).

        The package version is the model's plus the artifact's identity as semver build
        metadata (``3+d78d7137``): a device's object 9 instance names exactly which build it
        holds, so float32 and int8 builds of one model version are told apart."""
        cache = (built.key, entry.name, entry.version, seq, rollback_from)
        if cache not in self._sealed:
            kind = registry.get(built.backend).kind
            if kind is None:
                raise ValueError(f"backend {built.backend!r} makes no deliverable artifact")
            art = built.artifact
            manifest = Manifest(entry.name, package_version(entry, built), kind.name, bytes.fromhex(built.sha256),
                                len(art.data), arena=art.needs.ram_bytes,
                                tensors=tuple(t.as_json() for t in art.tensors), min_runtime=art.min_runtime,
                                seq=seq, rollback_from=rollback_from)
            self._sealed[cache] = seal_package(art.data, manifest, self.private)
        return self._sealed[cache]
