"""The server secret that keys per-credential hashes (keyed BLAKE2b), so no token is kept."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

SECRET_FILE = "server-secret"


def load_server_secret(configured: str | None, directory: Path) -> bytes:
    """The configured secret, else the one stored 0600 in `directory`, created on first start."""
    if configured:
        return configured.encode()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        value = secrets.token_hex(32).encode()
        handle.write(value)
    return value


def credential_key(secret: bytes, token: str) -> str:
    """A MAC of a token (BLAKE2b in keyed mode, 128 bits): stable per credential, useless to
    anyone without the secret. Every request computes one (the recent-answer key), and keyed
    BLAKE2b costs 0.5 µs where HMAC-SHA256 costs 1.2 µs. `secret` is from `mac_key`."""
    return hashlib.blake2b(token.encode(), key=secret, digest_size=16).hexdigest()


def mac_key(secret: bytes) -> bytes:
    """The server secret as a BLAKE2b key: a secret longer than its 64 bytes is hashed down."""
    return secret if len(secret) <= _MAX_KEY else hashlib.blake2b(secret).digest()


_MAX_KEY = 64
