"""Who is calling: the credential from the request headers, whether it could be a GitLab token,
and its keyed digest (the only form in which a credential is ever kept)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

_MAX_KEY = 64  # bytes: BLAKE2b's longest key


class Credential:
    """A caller credential in the header form it arrived in; never logged, never stored.

    Treat as immutable. A plain slotted class: every request makes one (a frozen dataclass
    costs five times more), and unlike a tuple it cannot be serialised field by field into a
    log line: anything that renders it gets the redacted `repr`."""

    __slots__ = ("kind", "token")

    def __init__(self, token: str, kind: str) -> None:
        self.token = token
        self.kind = kind  # "private" (PRIVATE-TOKEN) or "bearer" (Authorization: Bearer)

    def __repr__(self) -> str:  # keeps tokens out of tracebacks and debug output
        return f"Credential(kind={self.kind!r}, token=<redacted>)"


def credential_from(headers: Mapping[str, str]) -> Credential | None:
    """PRIVATE-TOKEN wins over Authorization: Bearer (GitLab's precedence).

    JOB-TOKEN, Basic auth and cookies are not credentials here: such a caller is anonymous.
    """
    token = headers.get("PRIVATE-TOKEN", "").strip()
    if token:
        return Credential(token, "private")
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credential(value.strip(), "bearer")
    return None


def could_be_a_token(token: str) -> bool:
    """GitLab tokens (personal, project, group, OAuth) are printable ASCII without spaces."""
    return token.isascii() and token.isprintable() and " " not in token


def credential_key(secret: bytes, token: str) -> str:
    """A MAC of a token (BLAKE2b in keyed mode, 128 bits): stable per credential, useless to
    anyone without the secret. Every request computes one (the recent-answer key), and keyed
    BLAKE2b costs 0.5 µs where HMAC-SHA256 costs 1.2 µs. `secret` is from `mac_key`."""
    return hashlib.blake2b(token.encode(), key=secret, digest_size=16).hexdigest()


def mac_key(secret: bytes) -> bytes:
    """The server secret as a BLAKE2b key: a secret longer than its 64 bytes is hashed down."""
    return secret if len(secret) <= _MAX_KEY else hashlib.blake2b(secret).digest()


def caller_key(secret: bytes, credential: Credential | None) -> str:
    """The caller's identity for caches: "anonymous" or the MAC of kind and token.

    Raises UnicodeError for a token that cannot be encoded (such a caller is refused later)."""
    if credential is None:
        return "anonymous"
    return credential_key(secret, f"{credential.kind}:{credential.token}")
