"""Device credentials (DTLS-PSK): add, rotate, revoke, bulk import; the lookup handshakes use.

Each endpoint has at most one credential per purpose: ``dm`` (its LwM2M server sessions) and
``bootstrap`` (its bootstrap server sessions); an identity belongs to one endpoint per purpose.
Rows live in ``device_credentials`` with the keys sealed by ``keystore.KeyStore``; the
decrypted keys are held in memory, because tinydtls asks for a key synchronously in the middle
of a handshake. Nothing here returns, logs or formats a key: ``Credential.public()`` is what
the API and CLI show, and a ``Credential``'s repr leaves the keys out.

Rotation: ``rotate`` stores a new key as *pending*; the bootstrap server writes it to the device
(Security object resource 5) and ``promote`` makes it the key at Bootstrap-Finish, so the device
never holds a key the server does not accept. ``rotate(now=True)`` replaces the key at once (for
devices re-provisioned out of band). ``revoke`` drops the keys: the next handshake with that
identity fails; listeners (the server) close its live sessions.

CSV import (a production batch): a header row with ``endpoint,identity,key`` and optionally
``purpose``; keys in hex. The file is checked completely before anything is written (one
error per bad line, naming the line and the column) and written in one transaction.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from aiocoap import Code
from sqlalchemy import Connection, delete, insert, select

from lwm2m.errors import BadRequest, LwM2MError, NotFound
from tinymlaas.security.keystore import KeyStore
from tinymlaas.store.store import Store
from tinymlaas.store.tables import DEVICE_CREDENTIALS, EVENTS

PURPOSES = ("dm", "bootstrap")
KEY_BYTES_MIN, KEY_BYTES_MAX = 16, 32  # tinydtls holds PSKs of up to 32 bytes (DTLS_PSK_MAX_KEY_LEN)
IDENTITY_MAX = 128
CSV_COLUMNS = ("endpoint", "identity", "key")


class Conflict(LwM2MError):
    """An identity or endpoint that already has a credential (HTTP 409)."""

    code = Code.CONFLICT


@dataclass(frozen=True)
class Credential:
    endpoint: str
    purpose: str
    identity: bytes
    key: bytes | None = field(default=None, repr=False)
    pending: bytes | None = field(default=None, repr=False)
    created_at: float = 0.0
    rotated_at: float | None = None
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """Everything but the keys."""
        return {"endpoint": self.endpoint, "purpose": self.purpose, "identity": self.identity.decode("utf-8"),
                "state": "revoked" if self.revoked_at else ("rotating" if self.pending else "active"),
                "created_at": self.created_at, "rotated_at": self.rotated_at, "revoked_at": self.revoked_at}


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise BadRequest(f"credential purpose {purpose!r}: expected dm or bootstrap")
    return purpose


def check_identity(identity: str) -> bytes:
    if not identity or len(identity) > IDENTITY_MAX or not identity.isprintable():
        raise BadRequest(f"PSK identity: expected 1..{IDENTITY_MAX} printable characters")
    return identity.encode("utf-8")


def parse_key(text: str) -> bytes:
    """A PSK given in hex; the error never repeats the value."""
    cleaned = text.strip().replace(":", "")
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise BadRequest("PSK: not hexadecimal") from None
    if not KEY_BYTES_MIN <= len(key) <= KEY_BYTES_MAX:
        raise BadRequest(f"PSK: {len(key)} bytes; expected {KEY_BYTES_MIN}..{KEY_BYTES_MAX} "
                         f"({2 * KEY_BYTES_MIN}..{2 * KEY_BYTES_MAX} hex digits)")
    return key


def new_key() -> bytes:
    return os.urandom(KEY_BYTES_MIN)


def _context(purpose: str, endpoint: str, identity: bytes, which: str) -> str:
    return f"{purpose}\0{endpoint}\0{identity.decode('utf-8')}\0{which}"


class Credentials:
    def __init__(self, store: Store, key_file: Path | None) -> None:
        self.store = store
        self.key_file = key_file
        self._keystore: KeyStore | None = None
        self.by_endpoint: dict[tuple[str, str], Credential] = {}
        self.by_identity: dict[tuple[str, bytes], Credential] = {}
        self.listeners: list[Callable[[str, Credential], None]] = []  # ("revoked" | "rotated" | ..., credential)

    # -- keys --------------------------------------------------------------------------------

    @property
    def keystore(self) -> KeyStore:
        if self._keystore is None:
            if self.key_file is None:
                raise LwM2MError("this server has no credentials key file (no data directory): credentials "
                                 "cannot be stored")
            self._keystore = KeyStore.load_or_create(self.key_file)
        return self._keystore

    async def load(self) -> int:
        rows = await self.store.read(lambda c: list(c.execute(select(DEVICE_CREDENTIALS))))
        if rows:
            self.keystore  # noqa: B018 - fail at start, not at the first handshake
        for row in rows:
            self._remember(self._decrypt(row))
        return len(rows)

    def _decrypt(self, row: Any) -> Credential:
        identity = row.identity.encode("utf-8")
        ks = self.keystore
        key = ks.open(row.key, _context(row.purpose, row.endpoint, identity, "key"), row.key_id) if row.key else None
        pending = (ks.open(row.pending_key, _context(row.purpose, row.endpoint, identity, "pending"), row.key_id)
                   if row.pending_key else None)
        return Credential(row.endpoint, row.purpose, identity, key, pending, row.created_at, row.rotated_at,
                          row.revoked_at)

    def _remember(self, cred: Credential) -> None:
        old = self.by_endpoint.get((cred.endpoint, cred.purpose))
        if old is not None:
            self.by_identity.pop((old.purpose, old.identity), None)
        self.by_endpoint[(cred.endpoint, cred.purpose)] = cred
        self.by_identity[(cred.purpose, cred.identity)] = cred

    # -- what handshakes and the authorizer ask -------------------------------------------------

    def lookup(self, purpose: str) -> Callable[[bytes], bytes | None]:
        """The key of an identity for one purpose (None: unknown or revoked) — for tinydtls."""
        table = self.by_identity

        def psk(identity: bytes) -> bytes | None:
            cred = table.get((purpose, identity))
            return cred.key if cred is not None and cred.revoked_at is None else None
        return psk

    def get(self, endpoint: str, purpose: str = "dm") -> Credential | None:
        return self.by_endpoint.get((endpoint, purpose))

    def endpoint_of(self, identity: bytes, purpose: str = "dm") -> str | None:
        cred = self.by_identity.get((purpose, identity))
        return cred.endpoint if cred is not None and cred.revoked_at is None else None

    def has(self, endpoint: str, purpose: str = "dm") -> bool:
        """Whether ``endpoint`` has a credential (a revoked one counts: it must not fall back to NoSec)."""
        return (endpoint, purpose) in self.by_endpoint

    @property
    def any_dm(self) -> bool:
        return any(purpose == "dm" for _, purpose in self.by_endpoint)

    def list(self, purpose: str | None = None) -> list[dict[str, Any]]:
        return [c.public() for (ep, p), c in sorted(self.by_endpoint.items()) if purpose in (None, p)]

    # -- changes --------------------------------------------------------------------------------

    def _row(self, cred: Credential) -> dict[str, Any]:
        ks = self.keystore
        return {"endpoint": cred.endpoint, "purpose": cred.purpose, "identity": cred.identity.decode("utf-8"),
                "key": (ks.seal(cred.key, _context(cred.purpose, cred.endpoint, cred.identity, "key"))
                        if cred.key else None),
                "pending_key": (ks.seal(cred.pending, _context(cred.purpose, cred.endpoint, cred.identity, "pending"))
                                if cred.pending else None),
                "key_id": ks.key_id, "created_at": cred.created_at, "rotated_at": cred.rotated_at,
                "revoked_at": cred.revoked_at}

    def _check_new(self, cred: Credential, replace: bool, batch: dict[Any, Credential] | None = None) -> None:
        other = self.by_identity.get((cred.purpose, cred.identity))
        if batch is not None:
            other = batch.get((cred.purpose, cred.identity), other)
        if other is not None and other.endpoint != cred.endpoint:
            raise Conflict(f"PSK identity {cred.identity.decode()!r} ({cred.purpose}) belongs to endpoint "
                           f"{other.endpoint!r}")
        if not replace and self.has(cred.endpoint, cred.purpose):
            raise Conflict(f"endpoint {cred.endpoint!r} has a {cred.purpose} credential already: rotate or revoke it")

    async def _save(self, creds: Sequence[Credential], action: str) -> None:
        rows = [self._row(c) for c in creds]
        now = time.time()

        def write(conn: Connection) -> None:
            for row in rows:
                conn.execute(delete(DEVICE_CREDENTIALS).where(DEVICE_CREDENTIALS.c.endpoint == row["endpoint"],
                                                              DEVICE_CREDENTIALS.c.purpose == row["purpose"]))
            if rows:
                conn.execute(insert(DEVICE_CREDENTIALS), rows)
                conn.execute(insert(EVENTS), [{"ts": now, "endpoint": r["endpoint"], "kind": "credentials",
                                               "detail": {"action": action, "purpose": r["purpose"],
                                                          "identity": r["identity"]}} for r in rows])
        await self.store.write(write)
        for cred in creds:
            self._remember(cred)
            for listener in self.listeners:
                listener(action, cred)

    async def add(self, endpoint: str, identity: str, key: bytes, purpose: str = "dm",
                  replace: bool = False) -> dict[str, Any]:
        cred = Credential(endpoint, check_purpose(purpose), check_identity(identity), key, None, time.time())
        if not KEY_BYTES_MIN <= len(key) <= KEY_BYTES_MAX:
            raise BadRequest(f"PSK: {len(key)} bytes; expected {KEY_BYTES_MIN}..{KEY_BYTES_MAX}")
        self._check_new(cred, replace)
        await self._save([cred], "added")
        return cred.public()

    def _current(self, endpoint: str, purpose: str) -> Credential:
        cred = self.get(endpoint, check_purpose(purpose))
        if cred is None:
            raise NotFound(f"endpoint {endpoint!r} has no {purpose} credential")
        return cred

    async def rotate(self, endpoint: str, purpose: str = "dm", key: bytes | None = None,
                     now: bool = False) -> dict[str, Any]:
        """A new key: pending until the device's next Bootstrap-Finish, or at once with ``now``."""
        cred = self._current(endpoint, purpose)
        if cred.revoked_at is not None:
            raise BadRequest(f"the {purpose} credential of {endpoint!r} is revoked: add a new one")
        fresh = key if key is not None else new_key()
        when = time.time()
        changed = (Credential(endpoint, purpose, cred.identity, fresh, None, cred.created_at, when) if now else
                   Credential(endpoint, purpose, cred.identity, cred.key, fresh, cred.created_at, when))
        await self._save([changed], "rotated" if now else "rotation-pending")
        return changed.public()

    async def promote(self, endpoint: str, purpose: str = "dm") -> None:
        """Bootstrap-Finish: the pending key (now in the device) becomes the key."""
        cred = self.get(endpoint, purpose)
        if cred is None or cred.pending is None:
            return
        await self._save([Credential(endpoint, purpose, cred.identity, cred.pending, None, cred.created_at,
                                     time.time())], "rotated")

    async def provision(self, endpoint: str, purpose: str = "dm") -> Credential:
        """The credential the bootstrap server writes: the pending key if a rotation waits, the
        current one, or a new one (identity = the endpoint name) stored as pending."""
        cred = self.get(endpoint, purpose)
        if cred is not None and cred.revoked_at is None:
            return cred
        identity = check_identity(endpoint)
        fresh = Credential(endpoint, purpose, identity, None, new_key(), time.time())
        self._check_new(fresh, replace=True)
        await self._save([fresh], "provisioned")
        return fresh

    async def revoke(self, endpoint: str, purpose: str = "dm") -> dict[str, Any]:
        cred = self._current(endpoint, purpose)
        revoked = Credential(endpoint, purpose, cred.identity, None, None, cred.created_at, cred.rotated_at,
                             time.time())
        await self._save([revoked], "revoked")
        return revoked.public()

    async def remove(self, endpoint: str, purpose: str = "dm") -> None:
        """Forget a credential entirely (the endpoint may then use NoSec, if NoSec is allowed)."""
        cred = self._current(endpoint, purpose)

        def drop(conn: Connection) -> None:
            conn.execute(delete(DEVICE_CREDENTIALS).where(DEVICE_CREDENTIALS.c.endpoint == endpoint,
                                                          DEVICE_CREDENTIALS.c.purpose == purpose))
        await self.store.write(drop)
        self.by_endpoint.pop((endpoint, purpose), None)
        self.by_identity.pop((purpose, cred.identity), None)
        for listener in self.listeners:
            listener("removed", cred)

    async def import_csv(self, text: str, replace: bool = False) -> dict[str, Any]:
        """Add every row of a CSV batch, or none (the errors name each bad line)."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise BadRequest(f"CSV header lacks {', '.join(missing)} (expected endpoint,identity,key[,purpose])")
        creds: list[Credential] = []
        errors: list[str] = []
        batch: dict[Any, Credential] = {}
        seen: set[tuple[str, str]] = set()
        now = time.time()
        for row in reader:
            line = reader.line_num
            try:
                endpoint = (row.get("endpoint") or "").strip()
                if not endpoint:
                    raise BadRequest("endpoint: empty")
                purpose = check_purpose((row.get("purpose") or "dm").strip())
                cred = Credential(endpoint, purpose, check_identity((row.get("identity") or "").strip()),
                                  parse_key(row.get("key") or ""), None, now)
                if (endpoint, purpose) in seen:
                    raise BadRequest(f"endpoint {endpoint!r} ({purpose}) appears twice")
                self._check_new(cred, replace, batch)
            except LwM2MError as exc:
                errors.append(f"line {line}: {exc.message}")
                continue
            seen.add((endpoint, purpose))
            batch[(purpose, cred.identity)] = cred
            creds.append(cred)
        if errors:
            shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
            raise BadRequest(f"CSV refused, nothing imported: {shown}")
        await self._save(creds, "imported")
        return {"imported": len(creds)}
