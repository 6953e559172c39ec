"""Secrets handed to people and applications (user tokens, API keys).

A key looks like `mh_<kind>_<prefix>_<secret>`. Only the prefix (to find the row) and
the SHA-256 of the whole key are stored; the key itself is shown once. A plain SHA-256
is enough here because the secret is 256 random bits, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    hashed: str


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_generate(kind: str) -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"mh_{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=prefix, hashed=key_hash(key))


def key_prefix(key: str, kind: str) -> str | None:
    """The prefix of a well-formed key of this kind, else None."""
    parts = key.split("_", 3)
    if len(parts) != 4 or parts[0] != "mh" or parts[1] != kind or len(parts[2]) != 12:
        return None
    return parts[2]


def key_matches(key: str, hashed: str) -> bool:
    return hmac.compare_digest(key_hash(key), hashed)
