"""The seed format (docs/node-protocol.md) and its validation, shared by every source.

Error messages never quote the token: it is a secret until enrollment spends it.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from powernode.agent.identity.base import SeedInvalid

SEED_VERSION = 1
TOKEN_PATTERN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


def parse_seed(data: bytes | str, *, source: str, where: str) -> dict[str, Any]:
    """The validated seed in `data`; raises `SeedInvalid` naming `source`, `where` and the flaw."""

    def invalid(problem: str) -> SeedInvalid:
        return SeedInvalid(source, where, problem)

    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        seed = json.loads(text)
    except UnicodeDecodeError as exc:
        raise invalid(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise invalid(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(seed, dict):
        raise invalid(f"expected a JSON object, got {type(seed).__name__}")

    version = seed.get("version")
    if type(version) is not int or version != SEED_VERSION:
        raise invalid(f"'version' must be {SEED_VERSION}, not {version!r}")

    node_id = seed.get("node_id")
    if not isinstance(node_id, str) or not _is_uuid(node_id):
        raise invalid(f"'node_id' must be a UUID string, not {node_id!r}")

    token = seed.get("token")
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise invalid("'token' must be a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}")

    urls = seed.get("urls")
    if not isinstance(urls, list) or not urls:
        raise invalid("'urls' must be a non-empty list of https URLs")
    for index, url in enumerate(urls):
        if not _is_https_url(url):
            raise invalid(f"'urls[{index}]' must be an https URL, not {url!r}")

    ca = seed.get("ca")
    if not isinstance(ca, str) or _PEM_BEGIN not in ca or _PEM_END not in ca:
        raise invalid("'ca' must be a PEM certificate (-----BEGIN CERTIFICATE----- ...)")

    return seed


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_https_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname)
