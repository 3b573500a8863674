"""The server's credentials key: encrypts device PSKs before they reach the database.

One 256-bit AES key in a file of mode 0600 (created on first use with ``O_EXCL``; a file that
others may read is refused). Each PSK is sealed with AES-GCM (``cryptography``) under a fresh
96-bit nonce, with the row it belongs to (purpose, endpoint, identity) as associated data, so
a ciphertext copied into another row does not decrypt. ``key_id`` (a hash prefix of the key)
is stored with each row: a database opened with another key file fails with a clear message
instead of garbage.

This module holds the key and seals/opens bytes; it does not know the tables (``credentials``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class KeyStoreError(ValueError):
    pass


class KeyStore:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyStoreError(f"credentials key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"tinymlaas credentials key\0" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"<KeyStore {self.key_id}>"

    @classmethod
    def load_or_create(cls, path: Path) -> "KeyStore":
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise KeyStoreError(f"{path.name} is readable by others (mode {mode:o}); chmod 600 it")
            return cls(path.read_bytes())
        path.parent.mkdir(parents=True, exist_ok=True)
        key = os.urandom(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    def seal(self, secret: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret, context.encode("utf-8"))

    def open(self, blob: bytes, context: str, key_id: str) -> bytes:
        if key_id != self.key_id:
            raise KeyStoreError(f"credential {context.split(chr(0))[1]!r} was encrypted with another server key "
                                f"({key_id}, this server has {self.key_id})")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag:
            raise KeyStoreError(f"credential {context.split(chr(0))[1]!r} does not decrypt (tampered row)") from None
