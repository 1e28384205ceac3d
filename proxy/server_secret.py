"""The server secret that keys per-credential digests (proxy/credentials.py), so no token is kept:
configured, or generated once and stored 0600 beside the cache."""

from __future__ import annotations

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
