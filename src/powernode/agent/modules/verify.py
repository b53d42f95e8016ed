"""Verify a staged module artifact and extract its tree; nothing unverified is ever activated.

In this order, each step refusing with `Rejected` naming the module and the cause:

1. the manifest the source gave is the desired digest, a powernode module manifest, and names
   the module and version asked for;
2. its signatures (referrers and the `.sig` tag) satisfy the module's trust policy
   (`trust.verify_module`, with the payload's roots, at the agent's clock); the layer is not
   opened before this;
3. the layer is read with `read_module_layer` (which refuses absolute paths, `..`, links out of
   the root, devices, setuid/setgid files, truncated, oversized or altered layers) and
   extracted into the generation's tree directory. Because some refusals come only at the end of
   the stream, the tree counts only when the whole read succeeded;
4. every file is read back: its sha256 must be what was streamed, and when the payload lists
   the module's files, the set of files, each sha256 and each fs-verity digest must match.

The tree record (`<tree>.json`: every entry with its sha256 and fs-verity digest) is written
last. Extraction never follows a symlink: the layer reader refuses members under a symlink and
files are created with O_EXCL | O_NOFOLLOW. Ownership is applied only when running as root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powernode.agent.fsutil import atomic_write
from powernode.agent.modules.errors import ActivationFailed, Rejected
from powernode.agent.modules.pull import Pulled
from powernode.agent.modules.request import ModuleRequest
from powernode.artifacts import layer as layer_reader
from powernode.artifacts.layer import LayerError, LayerMember, read_module_layer
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.media import ANNOTATION_REF_NAME
from powernode.artifacts.oci import manifest_children, parse_manifest
from powernode.artifacts.package import ModuleManifest, parse_module_manifest
from powernode.artifacts.signing import signature_tag
from powernode.artifacts.trust import verify_module
from powernode.errors import Invalid
from powernode.modules.verity import fsverity_digest_bytes, fsverity_digest_file

CHUNK = 1 << 20
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


def verify_and_extract(
    module: ModuleRequest, pulled: Pulled, tree: Path, *, now: dt.datetime, limits: Limits
) -> VerifiedModule:
    """Run the checks of the module docstring; the tree is left at `tree` (a new directory)."""
    manifest = check_manifest(module, pulled)
    signer = check_signatures(module, pulled.layout, now)
    entries = extract(module, pulled.layout, manifest, tree, limits)
    check_files(module, tree, entries)
    record = {"name": module.name, "digest": module.digest, "signer": signer, "entries": entries}
    atomic_write(tree.with_name(tree.name + ".json"), json.dumps(record).encode(), 0o644)
    return VerifiedModule(module, signer, tree, entries)


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


def extract(
    module: ModuleRequest,
    layout: OciLayout,
    manifest: ModuleManifest,
    tree: Path,
    limits: Limits,
) -> list[dict[str, Any]]:
    """Extract the layer into the new directory `tree`; its entries, in archive order."""
    tree.mkdir(mode=0o755)
    extractor = _Extractor(tree, as_root=os.geteuid() == 0)
    try:
        with layout.open_blob(manifest.layer.digest) as blob:
            members = read_module_layer(
                blob,
                max_layer_size=limits.max_layer_size,
                max_tree_size=limits.max_tree_size,
                max_member_size=limits.max_member_size,
                expected_size=manifest.layer.size,
                expected_digest=manifest.layer.digest,
            )
            for member in members:
                extractor.add(member)
        extractor.finish()
    except LayerError as exc:
        raise Rejected(module.name, f"unsafe or damaged layer: {exc.detail}") from exc
    except Invalid as exc:
        raise Rejected(module.name, exc.detail) from exc
    except OSError as exc:
        raise ActivationFailed(module.name, f"cannot extract into {tree}: {exc}") from exc
    return extractor.entries


class _Extractor:
    """Writes checked layer members under `root`; directory metadata is applied last."""

    def __init__(self, root: Path, *, as_root: bool) -> None:
        self.root = root
        self.as_root = as_root
        self.entries: list[dict[str, Any]] = []
        self.digests: dict[str, str] = {}
        self.dirs: dict[str, LayerMember] = {}
        self._present: set[str] = set()  # parents already seen to exist: one lexists each

    def add(self, member: LayerMember) -> None:
        self._parents(member.path)
        target = os.path.join(self.root, member.path)
        entry: dict[str, Any] = {
            "path": member.path,
            "type": member.type,
            "mode": member.mode,
            "uid": member.uid,
            "gid": member.gid,
            "mtime": member.mtime,
        }
        if member.type == layer_reader.DIR:
            if not os.path.isdir(target):
                os.mkdir(target, 0o700)
            self.dirs[member.path] = member
        elif member.type == layer_reader.FILE:
            entry["size"], entry["sha256"] = self._write(target, member)
            self.digests[member.path] = entry["sha256"]
        elif member.type == layer_reader.SYMLINK:
            assert member.target is not None
            os.symlink(member.target, target)
            self._owner_and_time(target, member)
            entry["target"] = member.target
        else:  # a hard link to an earlier file: the same inode, so its mode and owner
            assert member.target is not None
            os.link(os.path.join(self.root, member.target), target, follow_symlinks=False)
            source = os.lstat(target)
            entry |= {"type": layer_reader.FILE, "link": member.target, "size": source.st_size}
            entry |= {"mode": source.st_mode & 0o7777, "uid": source.st_uid, "gid": source.st_gid}
            entry["sha256"] = self.digests[member.target]
            self.digests[member.path] = entry["sha256"]
        self.entries.append(entry)

    def finish(self) -> None:
        """Apply directory metadata, deepest first (a read-only directory is filled by now)."""
        for path in sorted(self.dirs, key=lambda p: p.count("/"), reverse=True):
            member = self.dirs[path]
            target = os.path.join(self.root, path)
            if self.as_root:
                os.lchown(target, member.uid, member.gid)
            os.chmod(target, member.mode)
            os.utime(target, (member.mtime, member.mtime))

    def _parents(self, path: str) -> None:
        """Directories the layer did not list (it may leave parents implicit): 0755."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = os.path.join(self.root, *parts[:i])
            if parent in self._present:
                continue
            if not os.path.lexists(parent):
                os.mkdir(parent, 0o755)
            self._present.add(parent)

    def _write(self, target: str, member: LayerMember) -> tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, 0o600)
        sha, size = hashlib.sha256(), 0
        try:
            if member.content is not None:
                while chunk := member.content.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            if self.as_root:
                os.fchown(fd, member.uid, member.gid)  # before chmod: chown drops setid bits
            os.fchmod(fd, member.mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        return size, sha.hexdigest()

    def _owner_and_time(self, target: str, member: LayerMember) -> None:
        if self.as_root:
            os.lchown(target, member.uid, member.gid)
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def check_files(module: ModuleRequest, tree: Path, entries: list[dict[str, Any]]) -> None:
    """Read every file back (sha256, fs-verity digest) and compare with what is expected."""
    problems: list[str] = []
    for entry in entries:
        if entry["type"] != layer_reader.FILE:
            continue
        path = tree / entry["path"]
        sha, entry["verity"] = _digests(path)
        if sha != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 on disk {sha}, streamed {entry['sha256']}")
    if module.files is not None:
        problems += _against_expected(module, entries)
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


SMALL_FILE = 16 << 20
"""Files up to this size are read once for both digests (most module files are small)."""


def _digests(path: Path) -> tuple[str, str]:
    """(sha256 hex, fs-verity digest) of the file on disk, reading it once when it is small."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if os.fstat(handle.fileno()).st_size <= SMALL_FILE:
            data = handle.read()
            return hashlib.sha256(data).hexdigest(), fsverity_digest_bytes(data)
    return _sha256_file(path), fsverity_digest_file(path)


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()
