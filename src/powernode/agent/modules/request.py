"""The apply_modules payload, checked field by field (the agent carries no pydantic).

    {
      "modules": [                      # 1..64, names unique; layer order: the last is on top
        {
          "name": "web",                # a module name (lower case, digits, '._-')
          "version": "1.2",
          "reference": "cp.example:8443/modules/web:1.2" | "http://host/repo:tag"
                       | "oci:/var/lib/preload/web:1.2",   # an OCI layout on the node
          "digest": "sha256:...",       # the module manifest the control plane assigned
          "policy": {"identities": [{"identity": re, "issuer": re}], "public_keys": [PEM]},
          "roots": [PEM, ...],          # trusted signing roots (keyless); default []
          "files": {"etc/motd": {"sha256": hex, "verity": "sha256:..."}, ...}   # optional
        }
      ],
      "insecure": false,                # plain HTTP to registries (tests, local registries)
      "post_check": ["argv", ...] | null,
      "post_check_timeout_s": 60        # 1..3600
    }

`files`, when given, must list exactly the regular files of the module's tree, each with its
sha256 (hex) and, optionally, its fs-verity digest. Every error is a PayloadError naming the
field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from powernode.agent.errors import PayloadError
from powernode.agent.executors._payload import flag, integer, only
from powernode.artifacts.trust import TrustPolicy
from powernode.errors import Invalid

MAX_MODULES = 64
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX = re.compile(r"^[a-f0-9]{64}$")
_MODULE_FIELDS = ("name", "version", "reference", "digest", "policy", "roots", "files")
_FIELDS = ("modules", "insecure", "post_check", "post_check_timeout_s")


@dataclass(frozen=True)
class FileExpectation:
    """What the control plane knows of one file: its sha256 (hex) and fs-verity digest."""

    sha256: str
    verity: str | None = None


@dataclass(frozen=True)
class ModuleRequest:
    """One module to activate, and whom to trust for it."""

    name: str
    version: str
    reference: str
    digest: str
    policy: TrustPolicy
    roots: tuple[x509.Certificate, ...] = ()
    files: Mapping[str, FileExpectation] | None = None


@dataclass(frozen=True)
class ApplyRequest:
    """The whole payload: the modules in layer order, and the post-check."""

    modules: tuple[ModuleRequest, ...]
    insecure: bool = False
    post_check: tuple[str, ...] | None = None
    post_check_timeout_s: int = 60


def parse_request(payload: dict[str, Any]) -> ApplyRequest:
    """The request a payload describes; PayloadError naming the first bad field."""
    only(payload, _FIELDS)
    modules = payload.get("modules")
    if not isinstance(modules, list) or not 1 <= len(modules) <= MAX_MODULES:
        raise PayloadError(f"modules must be a list of 1 to {MAX_MODULES} modules")
    parsed = tuple(_module(doc, f"modules[{i}]") for i, doc in enumerate(modules))
    names = [module.name for module in parsed]
    if len(set(names)) != len(names):
        raise PayloadError(f"modules names a module twice: {', '.join(names)}")
    check = payload.get("post_check")
    if check is not None and (
        not isinstance(check, list) or not check or not all(isinstance(a, str) for a in check)
    ):
        raise PayloadError("post_check must be a non-empty argv (list of strings) or null")
    return ApplyRequest(
        modules=parsed,
        insecure=flag(payload, "insecure", False),
        post_check=tuple(check) if check is not None else None,
        post_check_timeout_s=integer(payload, "post_check_timeout_s", 60, 1, 3600),
    )


def _module(doc: object, where: str) -> ModuleRequest:
    if not isinstance(doc, dict):
        raise PayloadError(f"{where} must be an object")
    unknown = sorted(set(doc) - set(_MODULE_FIELDS))
    if unknown:
        raise PayloadError(f"{where} has unknown field(s) {', '.join(unknown)}")
    name, version = _text(doc, "name", where), _text(doc, "version", where)
    if not _NAME.match(name):
        raise PayloadError(f"{where}.name {name!r} is not a module name")
    digest = _text(doc, "digest", where)
    if not _DIGEST.match(digest):
        raise PayloadError(f"{where}.digest must be sha256: and 64 lower case hex digits")
    policy = doc.get("policy")
    if not isinstance(policy, dict):
        raise PayloadError(f"{where}.policy must be a trust policy object")
    try:
        trust = TrustPolicy.from_dict(policy)
    except Invalid as exc:
        raise PayloadError(f"{where}.policy: {exc.detail}") from None
    return ModuleRequest(
        name=name,
        version=version,
        reference=_text(doc, "reference", where),
        digest=digest,
        policy=trust,
        roots=_roots(doc.get("roots", []), f"{where}.roots"),
        files=_files(doc.get("files"), f"{where}.files"),
    )


def _text(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where}.{key} must be a non-empty string")
    return value


def _roots(value: object, where: str) -> tuple[x509.Certificate, ...]:
    if not isinstance(value, list) or not all(isinstance(pem, str) for pem in value):
        raise PayloadError(f"{where} must be a list of PEM certificates")
    roots: list[x509.Certificate] = []
    for n, pem in enumerate(value):
        try:
            roots += x509.load_pem_x509_certificates(pem.encode())
        except ValueError as exc:
            raise PayloadError(f"{where}[{n}] is not a PEM certificate: {exc}") from None
    return tuple(roots)


def _files(value: object, where: str) -> dict[str, FileExpectation] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object of path -> {{sha256, verity}}")
    files: dict[str, FileExpectation] = {}
    for path, expected in value.items():
        if not isinstance(expected, dict) or not set(expected) <= {"sha256", "verity"}:
            raise PayloadError(f"{where}[{path!r}] must be {{sha256, verity}}")
        sha, verity = expected.get("sha256"), expected.get("verity")
        if not isinstance(sha, str) or not _HEX.match(sha):
            raise PayloadError(f"{where}[{path!r}].sha256 must be 64 lower case hex digits")
        if verity is not None and (not isinstance(verity, str) or not _DIGEST.match(verity)):
            raise PayloadError(f"{where}[{path!r}].verity must be sha256:<64 hex> or null")
        files[path] = FileExpectation(sha, verity)
    return files
