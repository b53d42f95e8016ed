"""Verify a staged module artifact and extract its tree; nothing unverified is ever activated.

In this order, each step refusing with `Rejected` naming the module and the cause:

1. the manifest the source gave is the desired digest, a powernode module manifest, and names
   the module and version asked for;
2. its signatures (referrers and the `.sig` tag) satisfy the module's trust policy
   (`trust.verify_module`, with the payload's roots, at the agent's clock); the layer is not
   opened before this;
3. the layer is read with `read_module_layer` (which refuses absolute paths, `..`, links out of
   the root, devices, setuid/setgid files, truncated, oversized or altered layers) and
   extracted into the generation's tree directory (`extract`), each file's sha256 and
   fs-verity digest computed from the bytes written. The layer comes from the staging layout,
   or for registry pulls streams from the registry while it downloads (`Pulled.remote`); the
   reader checks its size and digest, once. Because some refusals come only at the end of the
   stream, the tree counts only when the whole read succeeded. A streamed layer the reader
   refuses is fetched again whole, to tell a damaged registry copy from a bad signed layer;
4. when the payload lists the module's files: the set of files, each sha256 and each fs-verity
   digest must match.

The tree record (`<tree>.json`: every entry with its sha256 and fs-verity digest) is written
last.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powernode.agent.fsutil import atomic_write
from powernode.agent.modules.errors import ActivationFailed, Rejected
from powernode.agent.modules.extract import LayerLimits, extract_layer
from powernode.agent.modules.pull import Pulled
from powernode.agent.modules.request import ModuleRequest
from powernode.agent.modules.stream import in_thread
from powernode.artifacts import layer as layer_reader
from powernode.artifacts.layer import LayerError, Readable
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.media import ANNOTATION_REF_NAME
from powernode.artifacts.oci import manifest_children, parse_manifest
from powernode.artifacts.package import ModuleManifest, parse_module_manifest
from powernode.artifacts.signing import signature_tag
from powernode.artifacts.trust import verify_module
from powernode.errors import Invalid

MAX_REASONS = 20


@dataclass(frozen=True)
class Limits:
    """Size limits of one module's layer (compressed), tree (uncompressed) and any one file."""

    max_layer_size: int = layer_reader.DEFAULT_MAX_LAYER_SIZE
    max_tree_size: int = layer_reader.DEFAULT_MAX_TREE_SIZE
    max_member_size: int | None = None


@dataclass(frozen=True)
class VerifiedModule:
    """A module whose tree passed every check."""

    request: ModuleRequest
    signer: str
    tree: Path
    entries: list[dict[str, Any]]

    @property
    def files(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["type"] == layer_reader.FILE]


async def verify_and_extract(
    module: ModuleRequest, pulled: Pulled, tree: Path, *, now: dt.datetime, limits: Limits
) -> VerifiedModule:
    """Run the checks of the module docstring; the tree is left at `tree` (a new directory)."""
    manifest = await in_thread(check_manifest, module, pulled)
    signer = await in_thread(check_signatures, module, pulled.layout, now)
    layer = manifest.layer
    expected = LayerLimits(
        limits.max_layer_size,
        limits.max_tree_size,
        limits.max_member_size,
        expected_size=layer.size,
        expected_digest=layer.digest,
    )
    extract = functools.partial(_extract, module, tree, expected)
    if pulled.remote is None:
        entries = await in_thread(_extract_staged, pulled.layout, layer.digest, extract)
    else:
        try:
            entries = await pulled.remote.stream(layer, extract)
        except Rejected:
            await pulled.remote.recheck(layer, pulled.layout.root)
            raise
    return await in_thread(_record, module, signer, tree, entries)


def check_manifest(module: ModuleRequest, pulled: Pulled) -> ModuleManifest:
    """The module manifest, if it is the desired one; else Rejected saying what it is."""
    if pulled.digest != module.digest:
        raise Rejected(
            module.name,
            f"manifest digest mismatch: {pulled.source} is {pulled.digest}, "
            f"not the desired {module.digest}",
        )
    try:
        data = pulled.layout.read_blob(module.digest)
        manifest = parse_module_manifest(data, where=f"manifest {module.digest}")
        config = pulled.layout.read_blob(manifest.config.digest)
        if not isinstance(json.loads(config), dict):
            raise Invalid("the module config is not a JSON object")
    except (Invalid, ValueError) as exc:
        cause = exc.detail if isinstance(exc, Invalid) else f"the module config is not JSON: {exc}"
        raise Rejected(module.name, cause) from exc
    if (manifest.name, manifest.version) != (module.name, module.version):
        raise Rejected(
            module.name,
            f"the artifact is {manifest.name}@{manifest.version}, "
            f"not {module.name}@{module.version}",
        )
    return manifest


def check_signatures(module: ModuleRequest, layout: OciLayout, now: dt.datetime) -> str:
    """Who signed the module, if the policy trusts them; else Rejected with every reason."""
    decision = verify_module(
        module.policy,
        module.digest,
        signature_manifests(layout, module.digest),
        trusted_roots=module.roots,
        now=now,
    )
    if not decision.allowed or decision.signer is None:
        reasons = decision.reasons or ["no signature satisfies the policy"]
        raise Rejected(
            module.name, f"not signed by a trusted signer: {'; '.join(reasons)}", reasons
        )
    return decision.signer


def signature_manifests(layout: OciLayout, digest: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """Each signature manifest in the layout for `digest` (referrers and the `.sig` tag)."""
    found = []
    sig_tag = signature_tag(digest)
    for desc in layout.manifests():
        if desc.digest == digest:
            continue
        try:
            data = layout.read_blob(desc.digest)
            doc = parse_manifest(data, where=f"manifest {desc.digest}")
            children, is_index = manifest_children(doc, where=f"manifest {desc.digest}")
        except Invalid:
            continue
        subject = doc.get("subject")
        is_referrer = isinstance(subject, dict) and subject.get("digest") == digest
        if is_index or not (is_referrer or desc.annotations.get(ANNOTATION_REF_NAME) == sig_tag):
            continue
        blobs = {}
        for child in children:
            try:
                blobs[child.digest] = layout.read_blob(child.digest)
            except Invalid:
                continue  # the signature check reports the missing payload
        found.append((data, blobs))
    return found


def _extract_staged(
    layout: OciLayout, digest: str, extract: Callable[[Readable], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    with layout.open_blob(digest) as blob:
        return extract(blob)


def _extract(
    module: ModuleRequest, tree: Path, expected: LayerLimits, layer: Readable
) -> list[dict[str, Any]]:
    """Extract `layer` into the new directory `tree`; its entries, in archive order."""
    try:
        return extract_layer(layer, tree, expected)
    except LayerError as exc:
        raise Rejected(module.name, f"unsafe or damaged layer: {exc.detail}") from exc
    except Invalid as exc:
        raise Rejected(module.name, exc.detail) from exc
    except OSError as exc:
        raise ActivationFailed(module.name, f"cannot extract into {tree}: {exc}") from exc


def _record(
    module: ModuleRequest, signer: str, tree: Path, entries: list[dict[str, Any]]
) -> VerifiedModule:
    """Check the files against the payload, then write the tree record."""
    check_files(module, entries)
    record = {"name": module.name, "digest": module.digest, "signer": signer, "entries": entries}
    atomic_write(tree.with_name(tree.name + ".json"), json.dumps(record).encode(), 0o644)
    return VerifiedModule(module, signer, tree, entries)


def check_files(module: ModuleRequest, entries: list[dict[str, Any]]) -> None:
    """When the payload lists the module's files: the files and their digests must match."""
    if module.files is None:
        return
    problems = _against_expected(module, entries)
    if problems:
        shown = problems[:MAX_REASONS]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise Rejected(module.name, f"files do not match: {'; '.join(shown)}{more}", problems)


def _against_expected(module: ModuleRequest, entries: Sequence[dict[str, Any]]) -> list[str]:
    assert module.files is not None
    files = {e["path"]: e for e in entries if e["type"] == layer_reader.FILE}
    problems = [f"{path}: expected, not in the layer" for path in module.files if path not in files]
    for path, entry in files.items():
        expected = module.files.get(path)
        if expected is None:
            problems.append(f"{path}: in the layer, not expected")
            continue
        if expected.sha256 != entry["sha256"]:
            problems.append(f"{path}: sha256 {entry['sha256']}, expected {expected.sha256}")
        if expected.verity is not None and expected.verity != entry["verity"]:
            problems.append(f"{path}: fs-verity {entry['verity']}, expected {expected.verity}")
    return sorted(problems)
