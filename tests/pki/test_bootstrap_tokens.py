"""Bootstrap tokens: their format, parsing, and the stored hash of their secret."""

from __future__ import annotations

import hashlib
import re

import pytest

from powernode.errors import Category
from powernode.pki import PkiError
from powernode.pki.bootstrap_tokens import generate_token, hash_secret, parse_token, secrets_match

MALFORMED = "malformed bootstrap token: expected 6 and 16 characters [a-z0-9] joined by '.'"


def test_a_generated_token_is_id_dot_secret_and_comes_with_the_secret_hash() -> None:
    token, token_id, secret_hash = generate_token()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token)
    assert token.startswith(f"{token_id}.")
    secret = token.split(".")[1]
    assert secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in secret_hash


def test_generated_tokens_differ() -> None:
    tokens = [generate_token()[0] for _ in range(200)]
    assert len(set(tokens)) == 200
    assert len({token[:6] for token in tokens}) > 190  # ids are random too


def test_generated_tokens_use_the_whole_alphabet() -> None:
    characters = set("".join(generate_token()[0].replace(".", "") for _ in range(200)))
    assert characters == set("abcdefghijklmnopqrstuvwxyz0123456789")


def test_parse_splits_a_token_into_id_and_secret() -> None:
    assert parse_token("abcdef.0123456789abcdef") == ("abcdef", "0123456789abcdef")
    token, token_id, secret_hash = generate_token()
    parsed_id, secret = parse_token(token)
    assert parsed_id == token_id
    assert secrets_match(secret_hash, secret)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abcdef0123456789abcdef",
        "abcde.0123456789abcdef",
        "abcdefg.0123456789abcdef",
        "abcdef.0123456789abcde",
        "abcdef.0123456789abcdef0",
        "ABCDEF.0123456789abcdef",
        "abcdef_0123456789abcdef",
        "abcdef.0123456789abcdef\n",
        " abcdef.0123456789abcdef",
        "abcdef.0123456789abcdef.x",
        "abcdef.0123456789abcd\u00e9f",
        "pn_abcdef_0123456789abcdef",
    ],
)
def test_anything_but_the_exact_format_is_refused_as_unauthorized(raw: str) -> None:
    with pytest.raises(PkiError) as caught:
        parse_token(raw)
    assert caught.value.category is Category.UNAUTHORIZED
    assert caught.value.detail == MALFORMED


def test_the_refusal_never_repeats_the_token() -> None:
    with pytest.raises(PkiError) as caught:
        parse_token("abcdef.0123456789abcdeX")
    assert "0123456789" not in str(caught.value)


def test_a_secret_matches_only_its_own_hash() -> None:
    secret_hash = hash_secret("0123456789abcdef")
    assert secret_hash == hashlib.sha256(b"0123456789abcdef").hexdigest()
    assert secrets_match(secret_hash, "0123456789abcdef")
    assert not secrets_match(secret_hash, "0123456789abcdee")
    assert not secrets_match(secret_hash, "")
    assert not secrets_match("", "0123456789abcdef")
    assert not secrets_match("not hex \u00e9", "0123456789abcdef")
