"""Each source against a real local server speaking its provider's protocol."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from powernode.agent.identity import IdentityError, discover
from powernode.agent.identity.base import registered_sources
from powernode.agent.identity.testing import (
    DMI,
    FakeAws,
    FakeAzure,
    FakeDigitalOcean,
    FakeGcp,
    FakeOpenStack,
    FakeServer,
    make_seed,
    seed_bytes,
    write_dmi,
    write_fw_cfg,
)
from tests.agent.identity.helpers import make_config


def test_seed_file_gives_seed_and_local_identity(tmp_path: Path, recorder: FakeServer) -> None:
    """A valid seed file is used as is, with the local hostname and no instance id."""
    seed_file = tmp_path / "seed.json"
    seed_file.write_bytes(seed_bytes())

    found = discover(make_config(tmp_path, "bare_metal", recorder, seed_file=seed_file))

    assert found.source == "seed"
    assert found.seed == make_seed()
    assert found.identity == {
        "source": "seed",
        "instance_id": None,
        "hostname": socket.gethostname(),
        "region": None,
        "zone": None,
        "instance_type": None,
        "raw": {"path": str(seed_file)},
    }
    assert recorder.requests == []


def test_fw_cfg_gives_seed_on_qemu(tmp_path: Path, recorder: FakeServer) -> None:
    """On QEMU the fw_cfg entry's seed is used, and the DMI system UUID identifies the guest."""
    config = make_config(tmp_path, "qemu", recorder)
    write_fw_cfg(config.sysfs_root, seed_bytes(node_id="0190f3c1-0000-7000-8000-000000000001"))
    write_dmi(config.sysfs_root, product_uuid="8B1F2C3D-0000-4000-8000-00000000ABCD")

    found = discover(config)

    assert found.source == "fw_cfg"
    assert found.seed is not None
    assert found.seed["node_id"] == "0190f3c1-0000-7000-8000-000000000001"
    assert found.identity["instance_id"] == "8b1f2c3d-0000-4000-8000-00000000abcd"
    assert found.identity["hostname"] == socket.gethostname()
    assert recorder.requests == []


def test_fw_cfg_matches_on_the_sysfs_directory_alone(tmp_path: Path, recorder: FakeServer) -> None:
    """The qemu_fw_cfg directory is enough, whatever DMI says (other hypervisors use fw_cfg)."""
    config = make_config(tmp_path, "bare_metal", recorder)
    write_fw_cfg(config.sysfs_root, seed_bytes())

    assert discover(config).source == "fw_cfg"


def test_aws_uses_imdsv2_token_and_user_data(tmp_path: Path, recorder: FakeServer) -> None:
    """AWS takes a session token, then reads the identity document and the seed with it."""
    with FakeAws(user_data=seed_bytes()) as aws:
        found = discover(make_config(tmp_path, "aws", recorder, endpoints={"aws": aws.url}))

    assert found.source == "aws"
    assert found.seed == make_seed()
    assert found.identity == {
        "source": "aws",
        "instance_id": "i-0123456789abcdef0",
        "hostname": socket.gethostname(),
        "region": "eu-central-1",
        "zone": "eu-central-1a",
        "instance_type": "m5.large",
        "raw": aws.document,
    }
    assert [(r.method, r.path) for r in aws.requests] == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/dynamic/instance-identity/document"),
        ("GET", "/latest/user-data"),
    ]
    assert aws.requests[0].headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert recorder.requests == []


@pytest.mark.parametrize("dmi", [{"board_asset_tag": "i-0abc"}, {"bios_vendor": "Amazon EC2"}])
def test_aws_matches_on_nitro_and_xen_dmi(
    tmp_path: Path, recorder: FakeServer, dmi: dict[str, str]
) -> None:
    """Instances whose sys_vendor is not 'Amazon EC2' are recognised by other DMI fields."""
    with FakeAws(user_data=seed_bytes()) as aws:
        config = make_config(tmp_path, "bare_metal", recorder, endpoints={"aws": aws.url})
        write_dmi(config.sysfs_root, sys_vendor="Xen", **dmi)
        found = discover(config)

    assert found.source == "aws"


def test_aws_imds_disabled_is_not_retried(tmp_path: Path, recorder: FakeServer) -> None:
    """A 403 on the token request means IMDS is off: one request, and the reason says so."""
    with FakeAws(user_data=seed_bytes(), disabled=True) as aws:
        config = make_config(tmp_path, "aws", recorder, endpoints={"aws": aws.url})
        with pytest.raises(IdentityError) as caught:
            discover(config)

    assert len(aws.requests) == 1
    reasons = dict((a.source, a.reason) for a in caught.value.tried)
    assert "metadata service is disabled" in reasons["aws"]
    assert "403" in reasons["aws"]


def test_aws_retries_503(tmp_path: Path, recorder: FakeServer) -> None:
    """Two 503s, then the token: the request is retried and discovery succeeds."""
    with FakeAws(user_data=seed_bytes(), unavailable=2) as aws:
        found = discover(make_config(tmp_path, "aws", recorder, endpoints={"aws": aws.url}))

    assert found.source == "aws"
    assert aws.paths()[:3] == ["/latest/api/token"] * 3
    assert len(aws.requests) == 5


def test_aws_gives_up_after_three_503s(tmp_path: Path, recorder: FakeServer) -> None:
    """IMDS answering 503 every time is tried three times, then reported."""
    with FakeAws(user_data=seed_bytes(), unavailable=100) as aws:
        config = make_config(tmp_path, "aws", recorder, endpoints={"aws": aws.url})
        with pytest.raises(IdentityError, match=r"aws: .*api/token answered HTTP 503"):
            discover(config)

    assert len(aws.requests) == 3


def test_aws_without_user_data_has_no_seed(tmp_path: Path, recorder: FakeServer) -> None:
    """No user data (404) is no seed: an error by default, the identity alone when allowed."""
    with FakeAws(user_data=None) as aws:
        endpoints = {"aws": aws.url}
        with pytest.raises(IdentityError, match="i-0123456789abcdef0 has no seed"):
            discover(make_config(tmp_path, "aws", recorder, endpoints=endpoints))
        found = discover(
            make_config(tmp_path, "aws", recorder, endpoints=endpoints, require_seed=False)
        )

    assert found.seed is None
    assert found.identity["instance_id"] == "i-0123456789abcdef0"


def test_gcp_sends_and_checks_metadata_flavor(tmp_path: Path, recorder: FakeServer) -> None:
    """GCP reads the instance and the seed attribute, with Metadata-Flavor both ways."""
    with FakeGcp(seed=seed_bytes()) as gcp:
        found = discover(make_config(tmp_path, "gcp", recorder, endpoints={"gcp": gcp.url}))

    assert found.source == "gcp"
    assert found.seed == make_seed()
    identity = {k: v for k, v in found.identity.items() if k != "raw"}
    assert identity == {
        "source": "gcp",
        "instance_id": "4520031799277581759",
        "hostname": "node-1.europe-west1-b.c.example.internal",
        "region": "europe-west1",
        "zone": "europe-west1-b",
        "instance_type": "e2-medium",
    }
    assert "attributes" not in found.identity["raw"], "attributes carry the token"
    assert all(r.headers.get("metadata-flavor") == "Google" for r in gcp.requests)
    assert gcp.paths() == [
        "/computeMetadata/v1/instance/?recursive=true",
        "/computeMetadata/v1/instance/attributes/powernode-seed",
    ]


def test_gcp_refuses_a_response_without_metadata_flavor(
    tmp_path: Path, recorder: FakeServer
) -> None:
    """A server that does not answer with Metadata-Flavor: Google is not trusted."""
    with FakeGcp(seed=seed_bytes(), flavor=False) as gcp:
        config = make_config(tmp_path, "gcp", recorder, endpoints={"gcp": gcp.url})
        with pytest.raises(IdentityError, match=r"gcp: .*without 'Metadata-Flavor: Google'"):
            discover(config)

    assert len(gcp.requests) == 1


def test_azure_reads_imds_with_metadata_header(tmp_path: Path, recorder: FakeServer) -> None:
    """Azure reads the instance and the base64 user data with `Metadata: true`."""
    with FakeAzure(user_data=seed_bytes()) as azure:
        found = discover(make_config(tmp_path, "azure", recorder, endpoints={"azure": azure.url}))

    assert found.source == "azure"
    assert found.seed == make_seed()
    identity = {k: v for k, v in found.identity.items() if k != "raw"}
    assert identity == {
        "source": "azure",
        "instance_id": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
        "hostname": "node-1",
        "region": "westeurope",
        "zone": "2",
        "instance_type": "Standard_D2s_v5",
    }
    assert "userData" not in found.identity["raw"]["compute"], "user data carries the token"
    assert azure.paths() == [
        "/metadata/instance?api-version=2021-02-01",
        "/metadata/instance/compute/userData?api-version=2021-01-01&format=text",
    ]


def test_azure_ignores_proxy_environment(
    tmp_path: Path, recorder: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMDS requests go straight to the endpoint even when the environment names a proxy."""
    with FakeServer() as proxy, FakeAzure(user_data=seed_bytes()) as azure:
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        found = discover(make_config(tmp_path, "azure", recorder, endpoints={"azure": azure.url}))

    assert found.source == "azure"
    assert proxy.requests == []


def test_azure_rejects_user_data_that_is_not_base64(tmp_path: Path, recorder: FakeServer) -> None:
    """Azure user data must be base64; anything else is a clear seed error."""
    with FakeAzure() as azure:
        azure.compute["userData"] = "{not base64}"
        config = make_config(tmp_path, "azure", recorder, endpoints={"azure": azure.url})
        with pytest.raises(IdentityError, match=r"source 'azure' .*not valid base64"):
            discover(config)


def test_digitalocean_reads_one_document(tmp_path: Path, recorder: FakeServer) -> None:
    """DigitalOcean's metadata document carries the identity and the seed as user data."""
    with FakeDigitalOcean(user_data=seed_bytes().decode()) as do:
        config = make_config(tmp_path, "digitalocean", recorder, endpoints={"digitalocean": do.url})
        found = discover(config)

    assert found.source == "digitalocean"
    assert found.seed == make_seed()
    assert found.identity == {
        "source": "digitalocean",
        "instance_id": "2756294",
        "hostname": "node-1",
        "region": "fra1",
        "zone": None,
        "instance_type": None,
        "raw": {"droplet_id": 2756294, "hostname": "node-1", "region": "fra1"},
    }


def test_openstack_reads_meta_data_and_user_data(tmp_path: Path, recorder: FakeServer) -> None:
    """OpenStack reads meta_data.json and the seed from user_data, dropping secrets from raw."""
    with FakeOpenStack(user_data=seed_bytes()) as nova:
        config = make_config(tmp_path, "openstack", recorder, endpoints={"openstack": nova.url})
        found = discover(config)

    assert found.source == "openstack"
    assert found.seed == make_seed()
    identity = {k: v for k, v in found.identity.items() if k != "raw"}
    assert identity == {
        "source": "openstack",
        "instance_id": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
        "hostname": "node-1.novalocal",
        "region": None,
        "zone": "nova",
        "instance_type": None,
    }
    assert found.identity["raw"]["name"] == "node-1"
    assert "admin_pass" not in found.identity["raw"]
    assert nova.paths() == ["/openstack/latest/meta_data.json", "/openstack/latest/user_data"]


@pytest.mark.parametrize(
    ("platform", "fake"),
    [
        ("aws", FakeAws),
        ("gcp", FakeGcp),
        ("azure", FakeAzure),
        ("digitalocean", FakeDigitalOcean),
        ("openstack", FakeOpenStack),
    ],
)
def test_only_the_matching_platform_is_asked(
    tmp_path: Path, recorder: FakeServer, platform: str, fake: type[FakeServer]
) -> None:
    """On one cloud, no other provider's metadata service receives a request."""
    with fake() as server:
        config = make_config(tmp_path, platform, recorder, endpoints={platform: server.url})
        with pytest.raises(IdentityError, match=f"{platform}: platform matched, but .* no seed"):
            discover(config)

    assert server.requests != []
    assert recorder.requests == []


@pytest.mark.parametrize("platform", ["bare_metal", "qemu"])
def test_no_request_when_dmi_matches_no_cloud(
    tmp_path: Path, recorder: FakeServer, platform: str
) -> None:
    """A machine that is no cloud instance makes no network request at all."""
    with pytest.raises(IdentityError):
        discover(make_config(tmp_path, platform, recorder))

    assert recorder.requests == []


def test_user_data_over_the_limit_is_refused(tmp_path: Path, recorder: FakeServer) -> None:
    """User data larger than 64 KiB is not read into memory."""
    huge = json.dumps({**make_seed(), "padding": "x" * 70_000}).encode()
    with FakeAws(user_data=huge) as aws:
        config = make_config(tmp_path, "aws", recorder, endpoints={"aws": aws.url})
        with pytest.raises(IdentityError, match=r"aws: .*user-data: response of \d+ bytes exceeds"):
            discover(config)


def test_a_silent_metadata_service_times_out(tmp_path: Path, recorder: FakeServer) -> None:
    """A service that accepts the connection but never answers gives up after timeout_s."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = make_config(
            tmp_path, "digitalocean", recorder, endpoints={"digitalocean": url}, timeout_s=0.2
        )
        with pytest.raises(IdentityError, match=r"digitalocean: GET .*v1\.json: timed out"):
            discover(config)


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("bare_metal", ["seed"]),
        ("qemu", ["seed", "fw_cfg"]),
        ("aws", ["seed", "aws"]),
        ("gcp", ["seed", "gcp"]),
        ("azure", ["seed", "azure"]),
        ("digitalocean", ["seed", "digitalocean"]),
        ("openstack", ["seed", "openstack"]),
    ],
)
def test_each_platform_matches_only_its_own_sources(
    tmp_path: Path, platform: str, expected: list[str]
) -> None:
    """DMI as each platform reports it selects that platform's source and no other."""
    sysfs_root = write_dmi(tmp_path, **DMI[platform])

    assert [s.name for s in registered_sources() if s.matches(sysfs_root)] == expected
