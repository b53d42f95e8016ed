"""References to artifacts in an OCI registry: `host[:port]/repository[:tag][@digest]`.

There is no default registry: a reference always names its host, as `ghcr.io/acme/web:1.0`
does (a host has a '.' or a ':', or is `localhost`). A leading `http://` means plain HTTP
(test registries, `insecure`); `https://` or no scheme means HTTPS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from powernode.artifacts.oci import check_digest
from powernode.errors import Invalid

_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
_TAG = re.compile(TAG_PATTERN)


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `digest`, when present, is what is fetched; `tag` is then informative."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    insecure: bool = False

    @property
    def base_url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.registry}"

    @property
    def identifier(self) -> str:
        """The digest, else the tag: what goes after `/manifests/`."""
        if self.digest is not None:
            return self.digest
        if self.tag is not None:
            return self.tag
        raise Invalid(f"{self} names neither a tag nor a digest")

    @property
    def where(self) -> str:
        """`registry/repository`, for messages."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=check_tag(tag) if tag is not None else None, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The manifest `digest` in the same repository (no tag)."""
        return replace(self, tag=None, digest=check_digest(digest))

    def __str__(self) -> str:
        text = f"{'http://' if self.insecure else ''}{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise Invalid(f"{tag!r} is not an OCI tag (1 to 128 of letters, digits, '._-')")
    return tag


def parse_reference(text: str, *, insecure: bool = False) -> Reference:
    """Parse `[http://|https://]host[:port]/repository[:tag][@digest]`; Invalid saying why."""
    rest = text
    if rest.startswith("http://"):
        rest, insecure = rest[len("http://") :], True
    elif rest.startswith("https://"):
        rest, insecure = rest[len("https://") :], False
    host, slash, path = rest.partition("/")
    # as Docker decides: a first component without '.' or ':' is a path, not a host
    named = "." in host or ":" in host or host == "localhost"
    if not slash or not named or not _HOST.match(host):
        raise Invalid(
            f"{text!r} is not a registry reference: expected host[:port]/repository[:tag]"
            "[@digest], e.g. ghcr.io/acme/web:1.0"
        )
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        check_digest(digest)
    tag = None
    name, colon, maybe_tag = path.rpartition(":")
    if colon and "/" not in maybe_tag:
        path, tag = name, check_tag(maybe_tag)
    if not _REPOSITORY.match(path):
        raise Invalid(
            f"{path!r} in {text!r} is not a repository name: lower case letters, digits and "
            "separators ('.', '_', '__', '-'), components joined by '/'"
        )
    return Reference(host, path, tag, digest, insecure)
