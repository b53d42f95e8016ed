"""Bootstrap tokens `<id>.<secret>`: 6 and 16 characters of [a-z0-9], like kubelet's.

The id is public and finds the stored token; the secret (about 83 bits) is stored only as its
SHA-256 hex digest, which is enough for a single-use secret that expires in minutes, and is
compared in constant time. Pure functions: storage, expiry and single use belong to the caller.
Error messages never repeat the token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

from powernode.pki.errors import PkiUnauthorized

ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 6
SECRET_LENGTH = 16
_TOKEN = re.compile(rf"([a-z0-9]{{{ID_LENGTH}}})\.([a-z0-9]{{{SECRET_LENGTH}}})")


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def generate_token() -> tuple[str, str, str]:
    """A fresh token: (the full token to hand out once, its id, the SHA-256 hex of its secret)."""
    token_id, secret = _random(ID_LENGTH), _random(SECRET_LENGTH)
    return f"{token_id}.{secret}", token_id, hash_secret(secret)


def parse_token(raw: str) -> tuple[str, str]:
    """Split a token into (id, secret); `PkiUnauthorized` unless it has exactly the right form."""
    match = _TOKEN.fullmatch(raw)
    if match is None:
        raise PkiUnauthorized(
            "malformed bootstrap token: expected 6 and 16 characters [a-z0-9] joined by '.'"
        )
    return match[1], match[2]


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest stored in place of a token's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_match(stored_hash: str, secret: str) -> bool:
    """Whether `secret` hashes to `stored_hash`, compared in constant time."""
    return hmac.compare_digest(stored_hash.encode(), hash_secret(secret).encode())
