"""Discovery as a whole: source order, seed validation, and the error when nothing is found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.identity import (
    DiscoveryConfig,
    IdentityError,
    SeedInvalid,
    SourceName,
    discover,
)
from powernode.agent.identity.base import registered_sources
from powernode.agent.identity.testing import (
    FakeAws,
    FakeServer,
    make_seed,
    seed_bytes,
    write_fw_cfg,
)
from powernode.errors import Category, Invalid
from tests.agent.identity.helpers import make_config


def test_sources_are_tried_in_the_documented_order() -> None:
    """Seed file, fw_cfg, AWS, GCP, Azure, DigitalOcean, OpenStack."""
    assert [s.name for s in registered_sources()] == [
        "seed",
        "fw_cfg",
        "aws",
        "gcp",
        "azure",
        "digitalocean",
        "openstack",
    ]


def test_seed_file_wins_over_fw_cfg(tmp_path: Path, recorder: FakeServer) -> None:
    """An operator's seed file takes precedence over a seed in the firmware."""
    seed_file = tmp_path / "seed.json"
    seed_file.write_bytes(seed_bytes(node_id="0190f3c1-0000-7000-8000-00000000000a"))
    config = make_config(tmp_path, "qemu", recorder, seed_file=seed_file)
    write_fw_cfg(config.sysfs_root, seed_bytes(node_id="0190f3c1-0000-7000-8000-00000000000b"))

    found = discover(config)

    assert found.source == "seed"
    assert found.seed is not None
    assert found.seed["node_id"] == "0190f3c1-0000-7000-8000-00000000000a"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (seed_bytes(version=2), "'version' must be 1, not 2"),
        (seed_bytes(version=True), "'version' must be 1, not True"),
        (seed_bytes(node_id="node-1"), "'node_id' must be a UUID"),
        (seed_bytes(token="abc"), "'token' must be a bootstrap token"),
        (seed_bytes(urls=[]), "'urls' must be a non-empty list of https URLs"),
        (seed_bytes(urls="https://a:8443"), "'urls' must be a non-empty list"),
        (seed_bytes(urls=["https://a:8443", "http://b:8443"]), r"'urls\[1\]' must be an https"),
        (seed_bytes(urls=["https://"]), r"'urls\[0\]' must be an https URL"),
        (seed_bytes(ca="MIIB"), "'ca' must be a PEM certificate"),
        (json.dumps({k: v for k, v in make_seed().items() if k != "ca"}).encode(), "'ca' must"),
    ],
)
def test_invalid_seed_file_names_source_and_problem(
    tmp_path: Path, recorder: FakeServer, content: bytes, problem: str
) -> None:
    """A malformed seed stops discovery with the source, the file and the flaw."""
    seed_file = tmp_path / "seed.json"
    seed_file.write_bytes(content)

    with pytest.raises(SeedInvalid, match=problem) as caught:
        discover(make_config(tmp_path, "bare_metal", recorder, seed_file=seed_file))

    assert caught.value.source == "seed"
    assert f"invalid seed from source 'seed' (file {seed_file})" in str(caught.value)
    assert caught.value.category is Category.INVALID


def test_invalid_seed_error_does_not_leak_the_token(tmp_path: Path, recorder: FakeServer) -> None:
    """The token is a secret; a malformed one is described, never quoted."""
    seed_file = tmp_path / "seed.json"
    seed_file.write_bytes(seed_bytes(token="SECRET.SECRETSECRETSECRET"))

    with pytest.raises(SeedInvalid) as caught:
        discover(make_config(tmp_path, "bare_metal", recorder, seed_file=seed_file))

    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(caught.value.extra)


def test_invalid_seed_in_user_data_names_the_cloud(tmp_path: Path, recorder: FakeServer) -> None:
    """A malformed seed in cloud user data names the provider and the problem."""
    with FakeAws(user_data=b"#cloud-config\n") as aws:
        config = make_config(tmp_path, "aws", recorder, endpoints={"aws": aws.url})
        with pytest.raises(SeedInvalid, match=r"source 'aws' \(instance user data\): not JSON"):
            discover(config)


def test_missing_seed_file_is_an_error(tmp_path: Path, recorder: FakeServer) -> None:
    """A seed file the operator named but that is not there is not silently skipped."""
    missing = tmp_path / "nope.json"
    with pytest.raises(SeedInvalid, match="cannot read it"):
        discover(make_config(tmp_path, "qemu", recorder, seed_file=missing))


def test_no_source_lists_every_source_and_reason(tmp_path: Path, recorder: FakeServer) -> None:
    """Without any seed, the error names each source with why it gave none."""
    with pytest.raises(IdentityError) as caught:
        discover(make_config(tmp_path, "qemu", recorder))

    error = caught.value
    assert type(error) is IdentityError
    assert error.category is Category.NOT_FOUND
    reasons = {a.source: a.reason for a in error.tried}
    assert list(reasons) == list(SourceName)
    assert reasons["seed"] == "no seed file configured"
    assert "no fw_cfg entry opt/powernode/seed" in reasons["fw_cfg"]
    assert reasons["aws"].startswith("not this platform (DMI sys_vendor='QEMU'")
    assert reasons["azure"] == "not this platform (DMI sys_vendor='QEMU', chassis_asset_tag='')"
    for attempt in error.tried:
        assert f"\n  {attempt.source}: {attempt.reason}" in error.detail
    assert error.extra["tried"][0] == {"source": "seed", "reason": "no seed file configured"}


def test_config_rejects_unknown_endpoint_names() -> None:
    """A misspelt endpoint override is an error, not a silently ignored setting."""
    with pytest.raises(Invalid, match="unknown source in endpoints: amazon"):
        DiscoveryConfig(endpoints={"amazon": "http://127.0.0.1:1"})


@pytest.mark.parametrize("timeout_s", [0, -1.0])
def test_config_rejects_non_positive_timeout(timeout_s: Any) -> None:
    """Timeouts must be positive."""
    with pytest.raises(Invalid, match="timeout_s must be positive"):
        DiscoveryConfig(timeout_s=timeout_s)
