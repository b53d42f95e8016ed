"""Certificate facts the agent needs while idle, read with the stdlib only.

The agent must know its certificate's validity (to schedule renewal) without keeping
`cryptography` resident (about 8 MB of RSS), so this module walks just enough DER to reach the
validity of a certificate (RFC 5280 section 4.1). Key generation and CSRs, which need
`cryptography`, happen in `powernode.agent.pki`, in a short-lived child process.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
from dataclasses import dataclass

_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*(?P<body>[A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)

RENEW_AT = 2 / 3
"""Renew at this fraction of the certificate's lifetime..."""
RENEW_JITTER = 0.10
"""...give or take this fraction of that delay, so that a fleet does not renew all at once."""


@dataclass(frozen=True)
class Validity:
    """A certificate's validity window (UTC)."""

    not_before: dt.datetime
    not_after: dt.datetime

    def expired(self, now: dt.datetime) -> bool:
        """Whether the certificate is past its end (or not yet valid) at `now`."""
        return not (self.not_before <= now < self.not_after)

    def renew_at(self, rng: random.Random) -> dt.datetime:
        """When to renew: about two thirds into the lifetime, with +-10% jitter."""
        lifetime = self.not_after - self.not_before
        return self.not_before + lifetime * (
            RENEW_AT * rng.uniform(1 - RENEW_JITTER, 1 + RENEW_JITTER)
        )


def pem_certificates(pem: str) -> list[bytes]:
    """The DER bodies of every certificate in a PEM bundle, in order."""
    return [
        base64.b64decode("".join(m.group("body").split()), validate=True)
        for m in _PEM_CERT.finditer(pem)
    ]


def validity(pem: str) -> Validity:
    """The validity of the first certificate in `pem`; ValueError if there is none or it is bad."""
    ders = pem_certificates(pem)
    if not ders:
        raise ValueError("no PEM certificate found")
    return validity_of_der(ders[0])


def validity_of_der(der: bytes) -> Validity:
    """The validity of a DER certificate."""
    cert, _ = _element(der, 0, 0x30)
    tbs, _ = _element(der, cert, 0x30)
    pos = tbs
    if der[pos] == 0xA0:  # [0] EXPLICIT version, absent for v1 certificates
        pos = _skip(der, pos)
    for _field in ("serialNumber", "signature", "issuer"):
        pos = _skip(der, pos)
    start, _ = _element(der, pos, 0x30)
    not_before, after_pos = _time(der, start)
    not_after, _ = _time(der, after_pos)
    return Validity(not_before, not_after)


def _header(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content length) of the element at `pos`."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, length


def _element(der: bytes, pos: int, tag: int) -> tuple[int, int]:
    """(content start, content end) of the element at `pos`, which must carry `tag`."""
    found, start, length = _header(der, pos)
    if found != tag:
        raise ValueError(f"expected DER tag {tag:#x} at {pos}, found {found:#x}")
    return start, start + length


def _skip(der: bytes, pos: int) -> int:
    """The position after the element at `pos`."""
    _, start, length = _header(der, pos)
    return start + length


def _time(der: bytes, pos: int) -> tuple[dt.datetime, int]:
    """A UTCTime or GeneralizedTime at `pos` and the position after it."""
    tag, start, length = _header(der, pos)
    text = der[start : start + length].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; RFC 5280: YY >= 50 means 19YY
        parsed = dt.datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        parsed = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"expected a DER time at {pos}, found tag {tag:#x}")
    return parsed.replace(tzinfo=dt.UTC), start + length
