"""Registry references: `[http://]host[:port]/repository[:tag][@digest]`."""

from __future__ import annotations

import pytest

from powernode.artifacts.reference import Reference, parse_reference
from powernode.errors import Invalid

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ghcr.io/acme/web:1.0", Reference("ghcr.io", "acme/web", "1.0")),
        ("localhost:5000/web", Reference("localhost:5000", "web")),
        ("localhost/web", Reference("localhost", "web")),
        ("http://127.0.0.1:5000/a/b/c:v2", Reference("127.0.0.1:5000", "a/b/c", "v2", None, True)),
        (f"reg.example/web@{DIGEST}", Reference("reg.example", "web", None, DIGEST)),
        (f"reg.example/web:1.0@{DIGEST}", Reference("reg.example", "web", "1.0", DIGEST)),
        ("https://reg.example/my_org/web-app__x", Reference("reg.example", "my_org/web-app__x")),
        ("[::1]:5000/web:1", Reference("[::1]:5000", "web", "1")),
    ],
)
def test_references_parse(text: str, expected: Reference) -> None:
    """Host, repository, tag, digest and scheme come out as written."""
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "web:1.0",
        "acme/web:1.0",
        "ghcr.io/Acme/web",
        "ghcr.io/acme/web:",
        "ghcr.io/acme/web:-bad",
        "ghcr.io/acme/web@sha256:1234",
        "ghcr.io//web",
        "ghcr.io/acme/../web",
        "host name/web",
    ],
)
def test_malformed_references_are_refused(text: str) -> None:
    """A reference without a host, or with a bad name, tag or digest, is Invalid."""
    with pytest.raises(Invalid):
        parse_reference(text)


def test_insecure_flag_and_identifier() -> None:
    """`insecure` chooses plain HTTP; the digest wins over the tag for fetching."""
    ref = parse_reference(f"127.0.0.1:5000/web:1.0@{DIGEST}", insecure=True)
    assert ref.base_url == "http://127.0.0.1:5000"
    assert ref.identifier == DIGEST
    assert str(ref) == f"http://127.0.0.1:5000/web:1.0@{DIGEST}"
    with pytest.raises(Invalid, match="neither a tag nor a digest"):
        _ = parse_reference("reg.example/web").identifier
