"""What lets a device trust a package: sequence numbers against rollback, and the signing keys.

``PackageSequences`` numbers sealed packages per model slot (the package name) in signing
order, persisted in ``package_sequences``: the same build (name, version, artifact key) always
gets the same number, a new build the next one, so a device that installed number N refuses
every package numbered N or less (``lwm2m.package.sequence_problem``) and a copy of an old
package replayed to it does not install. ``installed_on`` is the highest number the server
knows a device installed in a slot (its successful deployments): a rollback manifest is issued
from that number.

``SigningKeys`` is the server's package-signing key with rotation: ``rotate`` makes a new key
the signing key and keeps the previous one for an overlap period, during which the trust
anchor devices are given (``anchor``, written to ``/33100/0/12`` by the deployer before a
delivery, by ``push_anchor`` to every registered device, and by the bootstrap server) holds
both public keys, so a package signed with either verifies; after the overlap the anchor is the
new key alone and the previous private key is deleted. Files (mode 0600) in the data directory:
``signing-key.pem`` (current), ``signing-key.previous.pem`` and ``signing-keys.json``
(until when the previous key is trusted).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, func, insert, select

from lwm2m.errors import LwM2MError
from lwm2m.path import Path as LPath
from tinymlaas.deploy.signing import KEY_FILE, ServerKey
from tinymlaas.store.store import Store
from tinymlaas.store.tables import DEPLOYMENTS, PACKAGE_SEQUENCES

log = logging.getLogger(__name__)
PREVIOUS_FILE = "signing-key.previous.pem"
STATE_FILE = "signing-keys.json"
TRUST_ANCHOR = LPath(33100, 0, 12)


class PackageSequences:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[tuple[str, str, str], int] = {}

    async def number(self, name: str, version: str, artifact_key: str, artifact_sha256: str) -> int:
        """The sequence number of this build in slot ``name`` (assigned on first use)."""
        key = (name, version, artifact_key)
        if key in self._known:
            return self._known[key]

        def assign(conn: Connection) -> int:
            t = PACKAGE_SEQUENCES.c
            row = conn.execute(select(t.seq).where(t.name == name, t.version == version,
                                                   t.artifact_key == artifact_key)).first()
            if row is not None:
                return int(row.seq)
            top = conn.execute(select(func.max(t.seq)).where(t.name == name)).scalar()
            seq = int(top or 0) + 1
            conn.execute(insert(PACKAGE_SEQUENCES).values(name=name, version=version, artifact_key=artifact_key,
                                                          artifact_sha256=artifact_sha256, seq=seq,
                                                          sealed_at=time.time()))
            return seq
        self._known[key] = seq = await self.store.write(assign)
        return seq

    async def installed_on(self, endpoint: str, name: str) -> int | None:
        """The highest sequence number in slot ``name`` among ``endpoint``'s successful deployments."""
        d, s = DEPLOYMENTS.c, PACKAGE_SEQUENCES.c
        same_package = (s.name == d.model) & (s.version == d.version) & (s.artifact_sha256 == d.artifact_sha256)
        q = (select(func.max(s.seq)).select_from(DEPLOYMENTS.join(PACKAGE_SEQUENCES, same_package))
             .where(d.endpoint == endpoint, d.model == name, d.state == "succeeded"))
        top = await self.store.read(lambda c: c.execute(q).scalar())
        return int(top) if top is not None else None


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)


def _read_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path.name} does not hold an Ed25519 private key")
    return key


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SigningKeys(ServerKey):
    def __init__(self, private: Ed25519PrivateKey, data_dir: Path, previous: Ed25519PrivateKey | None = None,
                 previous_until: float = 0.0, key_file: Path | None = None) -> None:
        super().__init__(private)
        self.data_dir = data_dir
        self.key_file = key_file or data_dir / KEY_FILE
        self.previous = previous
        self.previous_until = previous_until

    @classmethod
    def load_or_create(cls, data_dir: Path, file: Path | None = None) -> "SigningKeys":
        """The current key in ``file`` (default ``signing-key.pem`` in ``data_dir``), and the previous
        one while its overlap lasts (beside it in ``data_dir``)."""
        current = ServerKey.load_or_create(data_dir, file).private
        previous, until = None, 0.0
        state = data_dir / STATE_FILE
        if (data_dir / PREVIOUS_FILE).exists() and state.exists():
            until = float(json.loads(state.read_text()).get("previous_until", 0))
            previous = _read_private(data_dir / PREVIOUS_FILE)
        keys = cls(current, data_dir, previous, until, file)
        keys.retire_expired()
        return keys

    @property
    def previous_public(self) -> bytes | None:
        if self.previous is None or time.time() >= self.previous_until:
            return None
        return _public(self.previous)

    @property
    def anchor(self) -> bytes:
        """The current public key, then the previous one while the overlap lasts."""
        return self.public + (self.previous_public or b"")

    def retire_expired(self) -> bool:
        """After the overlap: forget the previous key (and delete its file)."""
        if self.previous is None or time.time() < self.previous_until:
            return False
        self.previous = None
        for name in (PREVIOUS_FILE, STATE_FILE):
            (self.data_dir / name).unlink(missing_ok=True)
        log.info("previous package-signing key retired; trust anchor is %s alone", self.fingerprint)
        return True

    def rotate(self, overlap_s: float) -> dict[str, Any]:
        """A new signing key; the current one stays trusted for ``overlap_s`` seconds."""
        if overlap_s < 0:
            raise ValueError(f"overlap {overlap_s}: must not be negative")
        fresh = Ed25519PrivateKey.generate()
        until = time.time() + overlap_s
        _write_private(self.data_dir / PREVIOUS_FILE, self.private)
        state = self.data_dir / STATE_FILE
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"previous_until": until}, f)
        _write_private(self.key_file, fresh)
        self.previous, self.previous_until = self.private, until
        self.private, self.public = fresh, _public(fresh)
        self._sealed.clear()
        log.info("package-signing key rotated to %s; the previous key is trusted until %s", self.fingerprint,
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(until)))
        return self.status()

    def status(self) -> dict[str, Any]:
        prev = self.previous_public
        return {"current": self.fingerprint, "public_key": self.public.hex(),
                "previous": _fingerprint(prev) if prev else None,
                "previous_until": self.previous_until if prev else None, "anchor_keys": 1 + (prev is not None)}


def _fingerprint(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


async def push_anchor(server: Any, anchor: bytes, concurrency: int = 32, timeout: float = 10.0) -> dict[str, Any]:
    """Write ``anchor`` to ``/33100/0/12`` of every registered device that has the ML
    Capability object (over each device's own session); counts and failures by endpoint."""
    gate = asyncio.Semaphore(concurrency)
    failed: dict[str, str] = {}
    done = 0
    targets = [r.endpoint for r in server.registrations if 33100 in r.objects()]

    async def one(endpoint: str) -> None:
        nonlocal done
        async with gate:
            try:
                await server.write(endpoint, TRUST_ANCHOR, {TRUST_ANCHOR: anchor}, timeout=timeout)
                done += 1
            except LwM2MError as exc:
                failed[endpoint] = exc.message
    await asyncio.gather(*(one(ep) for ep in targets))
    return {"devices": len(targets), "written": done, "failed": failed}
