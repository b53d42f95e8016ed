"""`powernode artifact ...`: module versions as signed OCI artifacts.

`build` and `sign` work on an OCI image layout (a directory); `push` and `pull` move layouts to
and from any OCI Distribution registry; `verify` applies a trust policy to a layout
(`oci:DIR[:TAG]`) or a registry reference. The artifact is built from what the control plane
stores and is reproducible: the same module version gives the same digest on any machine.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from powernode.cli.common import OutputOption, report, state
from powernode.cli.output import OutputFormat
from powernode.errors import Invalid

app = typer.Typer(help="Module versions as signed OCI artifacts.", no_args_is_help=True)

LayoutOption = Annotated[Path, typer.Option("--layout", help="OCI image layout directory.")]
InsecureOption = Annotated[
    bool, typer.Option(help="Plain HTTP to the registry (tests and local registries only).")
]


def _split(module: str) -> tuple[str, str]:
    name, sep, version = module.partition("@")
    if not sep or not name or not version:
        raise Invalid(f"{module!r} is not NAME@VERSION")
    return name, version


def _credentials() -> Any:
    """Registry credentials from POWERNODE_REGISTRY_USERNAME / _PASSWORD, if set."""
    from powernode.artifacts.registry import Credentials

    user = os.environ.get("POWERNODE_REGISTRY_USERNAME")
    password = os.environ.get("POWERNODE_REGISTRY_PASSWORD")
    return Credentials(user, password) if user and password else None


def build_into(ctx: typer.Context, module: str, layout: Path) -> tuple[str, str]:
    """Build NAME@VERSION into `layout`; returns (manifest digest, tag)."""
    from powernode.artifacts.package import build_module_artifact, version_tag
    from powernode.cli.templates import fetch_blobs
    from powernode.modules.entries import Entry
    from powernode.modules.store import ContentStore

    name, version = _split(module)
    cli = state(ctx)
    client = cli.client()
    meta = client.get(f"/modules/{name}/versions/{version}")
    entries = [Entry(**doc) for doc in client.get(f"/modules/{name}/versions/{version}/entries")]
    store: ContentStore = fetch_blobs(cli, client, entries)
    created = dt.datetime.fromisoformat(meta["created_at"].replace("Z", "+00:00"))
    with build_module_artifact(
        name=name,
        version=version,
        spec=meta["spec"],
        entries=entries,
        open_blob=store.open,
        created=created,
    ) as artifact:
        tag = version_tag(version)
        descriptor = artifact.write_layout(layout, tag=tag)
    return descriptor.digest, tag


@app.command()
def build(
    ctx: typer.Context,
    module: str,
    layout: LayoutOption,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Write NAME@VERSION as an OCI artifact into an OCI image layout (tagged VERSION)."""
    digest, tag = build_into(ctx, module, layout)
    data = {"module": module, "layout": str(layout), "tag": tag, "digest": digest}
    report(output, f"{module} → {layout}:{tag} {digest}", data)


@app.command()
def sign(
    ctx: typer.Context,
    module: str,
    key: Annotated[
        Path | None,
        typer.Option(
            help="Publisher private key (PKCS#8 PEM, ECDSA P-256). Without it: keyless, a "
            "10-minute certificate for your identity from the control plane."
        ),
    ] = None,
    layout: Annotated[
        Path | None, typer.Option("--layout", help="Also add the signatures to this layout.")
    ] = None,
    upload: Annotated[
        bool, typer.Option(help="Store the signature in the control plane (what nodes check).")
    ] = True,
    reference: Annotated[
        str | None, typer.Option(help="The repository the signature names (docker-reference).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Sign NAME@VERSION: the signature goes to the control plane (and, with --layout, into the
    layout both as the `sha256-<digest>.sig` tag and as a referrer)."""
    from powernode.artifacts.layout import OciLayout
    from powernode.artifacts.package import version_tag
    from powernode.artifacts.signing import KeySigner, Signer, sign_manifest

    name, version = _split(module)
    tag = version_tag(version)
    with tempfile.TemporaryDirectory() as tmp:
        target = layout or Path(tmp) / "layout"
        try:
            subject = OciLayout.open(target).resolve(tag)
        except Exception:
            build_into(ctx, module, target)
            subject = OciLayout.open(target).resolve(tag)
        signer: Signer
        if key is not None:
            password = os.environ.get("POWERNODE_SIGNING_KEY_PASSWORD")
            signer = KeySigner.from_pem(key.read_bytes(), password.encode() if password else None)
        else:
            signer = _keyless(ctx)
        now = dt.datetime.now(dt.UTC)
        bundle = sign_manifest(subject.digest, reference or f"modules/{name}", signer, now=now)
        artifacts = (bundle.tag_artifact(), bundle.referrer_artifact(subject))
        if layout is not None:
            out = OciLayout.open(layout)
            for artifact in artifacts:
                for blob in artifact.blobs.values():
                    out.put_blob_bytes(blob)
                out.add_manifest(
                    artifact.manifest,
                    "application/vnd.oci.image.manifest.v1+json",
                    tag=artifact.tag,
                )
        if upload:
            state(ctx).client().post(
                f"/modules/{name}/versions/{version}/signatures", _upload_body(artifacts[0])
            )
    places = [str(layout)] if layout else []
    places += ["the control plane"] if upload else []
    line = f"signed {module} ({subject.digest}) in {' and '.join(places) or 'nothing'}"
    report(output, line, {"module": module, "digest": subject.digest, "stored_in": places})


def _upload_body(artifact: Any) -> dict[str, Any]:
    import base64

    return {
        "manifest": base64.b64encode(artifact.manifest).decode(),
        "blobs": {d: base64.b64encode(b).decode() for d, b in artifact.blobs.items()},
    }


class _RemoteKeyless:
    """Keyless-style signing: a fresh key per signature, certified for 10 minutes by the
    control plane's signing CA for the caller's identity."""

    def __init__(self, ctx: typer.Context) -> None:
        self.ctx = ctx

    def sign(self, payload: bytes, *, now: dt.datetime) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from powernode.artifacts.signing import PayloadSignature

        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        issued = (
            state(self.ctx).client().post("/signing/certificate", {"public_key": public.decode()})
        )
        certificate = x509.load_pem_x509_certificate(issued["certificate"].encode())
        chain = tuple(x509.load_pem_x509_certificates(issued["chain"].encode()))
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        return PayloadSignature(signature, certificate, chain)


def _keyless(ctx: typer.Context) -> Any:
    return _RemoteKeyless(ctx)


@app.command()
def push(
    ctx: typer.Context,
    module: str,
    reference: str,
    layout: Annotated[
        Path | None, typer.Option("--layout", help="Push this layout (default: build one).")
    ] = None,
    insecure: InsecureOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Push NAME@VERSION (and the signatures in its layout) to REGISTRY/REPO[:TAG]."""
    from powernode.artifacts.registry import push_layout

    with tempfile.TemporaryDirectory() as tmp:
        source = layout or Path(tmp) / "layout"
        if layout is None:
            build_into(ctx, module, source)
        result = push_layout(source, reference, credentials=_credentials(), insecure=insecure)
    data = {"module": module, "reference": reference, "result": str(result)}
    report(output, f"pushed {module} to {reference}: {result}", data)


@app.command()
def pull(
    reference: str,
    layout: LayoutOption,
    insecure: InsecureOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Pull REGISTRY/REPO:TAG (with its signatures) into an OCI layout, verifying every digest."""
    from powernode.artifacts.registry import pull as pull_ref

    descriptor = pull_ref(reference, layout, credentials=_credentials(), insecure=insecure)
    data = {"reference": reference, "layout": str(layout), "digest": descriptor.digest}
    report(output, f"pulled {reference} → {layout} {descriptor.digest}", data)


@app.command()
def verify(
    ctx: typer.Context,
    reference: str,
    key: Annotated[
        list[Path] | None, typer.Option(help="A trusted public key (PEM); repeatable.")
    ] = None,
    identity: Annotated[
        str | None, typer.Option(help="Signer identity regexp (whole-string match).")
    ] = None,
    issuer: Annotated[str | None, typer.Option(help="Issuer regexp (whole-string match).")] = None,
    root: Annotated[
        list[Path] | None, typer.Option(help="Trusted signing root certificate (PEM).")
    ] = None,
    insecure: InsecureOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Verify the signatures of `oci:DIR[:TAG]` or REGISTRY/REPO:TAG against a trust policy;
    exits non-zero, with every reason, unless a signature satisfies it. Without --key or
    --identity, the module's own policy and the signing roots come from the control plane."""
    from cryptography import x509

    from powernode.artifacts.layout import OciLayout
    from powernode.artifacts.registry import pull as pull_ref
    from powernode.artifacts.trust import TrustPolicy, verify_module

    if (identity is None) != (issuer is None):
        raise Invalid("--identity and --issuer go together")
    from_control_plane = not key and identity is None
    policy: TrustPolicy | None = None
    if not from_control_plane:
        policy = TrustPolicy(
            identities=[(identity, issuer)] if identity and issuer else [],
            public_keys=[p.read_text() for p in key or []],
        )
    roots = [x509.load_pem_x509_certificate(p.read_bytes()) for p in root or []]
    with tempfile.TemporaryDirectory() as tmp:
        if reference.startswith("oci:"):
            directory, _, tag = reference[4:].partition(":")
            layout = OciLayout.open(Path(directory))
            subject = layout.resolve(tag) if tag else layout.manifests()[0]
        else:
            subject = pull_ref(reference, Path(tmp), credentials=_credentials(), insecure=insecure)
            layout = OciLayout.open(Path(tmp))
        signatures = _signatures(layout, subject.digest)
        if policy is None:
            policy, served_roots = _stored_policy(ctx, layout, subject.digest)
            roots += served_roots
        decision = verify_module(
            policy, subject.digest, signatures, trusted_roots=roots, now=dt.datetime.now(dt.UTC)
        )
    if not decision.allowed:
        reasons = "; ".join(decision.reasons) or "no signature found"
        raise Invalid(f"{reference} ({subject.digest}) is not trusted: {reasons}")
    line = f"verified {reference} ({subject.digest}): signed by {decision.signer}"
    data = {"reference": reference, "digest": subject.digest, "signer": decision.signer}
    report(output, line, data)


def _stored_policy(ctx: typer.Context, layout: Any, digest: str) -> tuple[Any, list[Any]]:
    """The trust policy of the module the artifact names, and the control plane's signing
    roots."""
    import json

    from cryptography import x509

    from powernode.artifacts.media import ANNOTATION_MODULE_NAME
    from powernode.artifacts.trust import TrustPolicy

    annotations = json.loads(layout.read_blob(digest)).get("annotations", {})
    name = annotations.get(ANNOTATION_MODULE_NAME)
    if not name:
        raise Invalid("the artifact names no module: give --key or --identity/--issuer")
    client = state(ctx).client()
    stored = client.get(f"/modules/{name}/trust-policy")
    policy = TrustPolicy.from_dict(
        {"identities": stored["identities"], "public_keys": stored["public_keys"]}
    )
    pems = client.get("/signing/roots")["roots"]
    return policy, [x509.load_pem_x509_certificate(p.encode()) for p in pems]


def _signatures(layout: Any, digest: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every signature manifest in the layout for `digest` (tag flavour and referrers)."""
    import json

    from powernode.artifacts.signing import signature_tag

    found = []
    for descriptor in layout.manifests():
        raw = layout.read_blob(descriptor.digest)
        doc = json.loads(raw)
        subject = (doc.get("subject") or {}).get("digest")
        tagged = descriptor.annotations.get("org.opencontainers.image.ref.name")
        if subject != digest and tagged != signature_tag(digest):
            continue
        blobs = {
            d["digest"]: layout.read_blob(d["digest"])
            for d in [doc.get("config", {}), *doc.get("layers", [])]
            if d.get("digest")
        }
        found.append((raw, blobs))
    return found
