"""The bootc-compatible OCI image, in an OCI image layout (`bootc/`, tag `latest`).

One layer: the tree tar with the kernel and our RAM-boot initramfs moved to
`/usr/lib/modules/<kver>/vmlinuz` and `/usr/lib/modules/<kver>/initramfs.img`, `/boot` left
empty (and the `/vmlinuz`, `/initrd.img` links into it dropped), `/sysroot` and the
`/ostree -> sysroot/ostree` link added. The image config carries the labels bootc looks for
(`containers.bootc=1`, `ostree.bootable=1`).

Reproducibility: the tree tar is deterministic, entries are rewritten with numeric owners only
and times clamped to `source_date_epoch`, the compressor is deterministic (zstd from the
pinned zstandard, single-threaded; or gzip with mtime 0), and every JSON document is
canonical: the same inputs give the same manifest digest.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from powernode.artifacts.layout import OciLayout
from powernode.artifacts.media import OCI_MANIFEST
from powernode.artifacts.oci import Descriptor, canonical_json
from powernode.errors import Invalid
from powernode.images.spec import BootInputs, BuiltFile, Format, FormatResult
from powernode.images.tools import built_file

LAYOUT_DIR = "bootc"
TAG = "latest"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPES = {
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
}
ZSTD_LEVEL = 3
GZIP_LEVEL = 6
LABELS = {"containers.bootc": "1", "ostree.bootable": "1"}
BOOT_LINKS = ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old")
"""Debian's links at the top of the tree into /boot, which is emptied."""
CHUNK = 1 << 20


def build_bootc(inputs: BootInputs, out_dir: Path, *, compression: str = "zstd") -> FormatResult:
    """Write the OCI layout `bootc/` (tag `latest`) into `out_dir`; digest = the manifest's."""
    if compression not in LAYER_MEDIA_TYPES:
        raise Invalid(f"unknown layer compression {compression!r}: use zstd or gzip")
    layout = OciLayout.create(out_dir / LAYOUT_DIR)
    created = dt.datetime.fromtimestamp(inputs.source_date_epoch, dt.UTC)
    created_text = created.strftime("%Y-%m-%dT%H:%M:%SZ")

    tmp = layout.new_blob_file()
    try:
        with tmp.open("wb") as raw:
            blob = _HashingWriter(raw)
            diff = _compressed(blob, compression)
            tarred = _HashingWriter(diff)
            _write_layer(inputs, tarred)
            diff.close()
        layer = Descriptor(LAYER_MEDIA_TYPES[compression], blob.digest(), blob.size)
        layout.commit_blob(tmp, layer.digest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    diff_id = tarred.digest()

    config_doc: dict[str, Any] = {
        "architecture": inputs.arch.oci_architecture,
        "os": "linux",
        "created": created_text,
        "config": {"Labels": dict(LABELS), "Cmd": ["/sbin/init"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created_text,
                "created_by": "powernode image build (bootc)",
                "comment": f"kernel {inputs.kernel_version}",
            }
        ],
    }
    config_bytes = canonical_json(config_doc)
    config = Descriptor.of(OCI_CONFIG, config_bytes)
    layout.put_blob_bytes(config_bytes)
    manifest_bytes = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.document(),
            "layers": [layer.document()],
            "annotations": {"org.opencontainers.image.created": created_text},
        }
    )
    manifest = layout.add_manifest(manifest_bytes, OCI_MANIFEST, tag=TAG)
    root = layout.root
    files: tuple[BuiltFile, ...] = tuple(
        built_file(root / rel, f"{LAYOUT_DIR}/{rel}")
        for rel in (
            *(f"blobs/sha256/{d.digest.split(':')[1]}" for d in (manifest, config, layer)),
            "index.json",
            "oci-layout",
        )
    )
    return FormatResult(
        format=Format.BOOTC,
        files=files,
        details={
            "layout": LAYOUT_DIR,
            "tag": TAG,
            "reference": f"oci:{LAYOUT_DIR}:{TAG}",
            "manifest_digest": manifest.digest,
            "config_digest": config.digest,
            "layer_digest": layer.digest,
            "layer_media_type": layer.media_type,
            "diff_id": diff_id,
            "kernel_version": inputs.kernel_version,
            "labels": dict(LABELS),
        },
        digest=manifest.digest,
    )


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


def _compressed(out: _HashingWriter, compression: str) -> IO[bytes]:
    sink = cast(IO[bytes], out)
    if compression == "zstd":
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0)
        return cast(IO[bytes], compressor.stream_writer(sink, closefd=False))
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=GZIP_LEVEL)
    return cast(IO[bytes], gz)


def _write_layer(inputs: BootInputs, out: _HashingWriter) -> None:
    """The layer's tar: the tree, rewritten as bootc wants it."""
    kver = inputs.kernel_version
    modules = f"usr/lib/modules/{kver}"
    epoch = inputs.source_date_epoch
    seen: set[str] = set()
    with (
        tarfile.open(inputs.tree_tar) as source,
        tarfile.open(fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.PAX_FORMAT) as layer,
    ):
        for member in source:
            name = _normal(member.name)
            if not name:
                continue  # the root directory itself: runtimes make their own
            if name in (f"{modules}/vmlinuz", f"{modules}/initramfs.img"):
                continue
            if name == "boot":
                if not member.isdir():
                    raise Invalid(f"{inputs.tree_tar}: /boot is not a directory")
            elif name.startswith("boot/") or _boot_link(name, member):
                continue
            if member.islnk() and _normal(member.linkname).startswith("boot/"):
                raise Invalid(f"{inputs.tree_tar}: {member.name} is a hard link into /boot")
            seen.add(name)
            entry = _clean(member, name, epoch)
            data = source.extractfile(member) if member.isreg() else None
            layer.addfile(entry, data)
        for extra in _extra_entries(seen, modules, epoch):
            layer.addfile(extra)
        moved = (
            (f"{modules}/vmlinuz", inputs.vmlinuz),
            (f"{modules}/initramfs.img", inputs.initramfs),
        )
        for path, src in moved:
            info = _info(path, tarfile.REGTYPE, 0o644, epoch)
            info.size = src.stat().st_size
            with src.open("rb") as handle:
                layer.addfile(info, handle)


def _extra_entries(seen: set[str], modules: str, epoch: int) -> Iterator[tarfile.TarInfo]:
    """The directories and links bootc expects that the tree lacks."""
    parts = modules.split("/")
    wanted = ["boot", "sysroot"] + ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for path in wanted:
        if path not in seen:
            yield _info(path, tarfile.DIRTYPE, 0o755, epoch)
            seen.add(path)
    if "ostree" not in seen:
        link = _info("ostree", tarfile.SYMTYPE, 0o777, epoch)
        link.linkname = "sysroot/ostree"
        yield link


def _info(name: str, kind: bytes, mode: int, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _clean(member: tarfile.TarInfo, name: str, epoch: int) -> tarfile.TarInfo:
    """A copy of `member` named `name`: numeric owners only, time clamped, no other PAX."""
    entry = tarfile.TarInfo(name + ("/" if member.isdir() else ""))
    entry.type = member.type
    entry.mode = member.mode
    entry.uid, entry.gid = member.uid, member.gid
    entry.uname = entry.gname = ""
    entry.mtime = min(int(member.mtime), epoch)
    entry.size = member.size if member.isreg() else 0
    entry.linkname = _normal(member.linkname) if member.islnk() else member.linkname
    entry.devmajor, entry.devminor = member.devmajor, member.devminor
    entry.pax_headers = {
        k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")
    }
    return entry


def _normal(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Invalid(f"tree tar member {name!r} leaves the root")
    return "/".join(parts)


def _boot_link(name: str, member: tarfile.TarInfo) -> bool:
    """Whether `member` is one of Debian's top-level links into /boot."""
    return name in BOOT_LINKS and member.issym() and member.linkname.lstrip("/").startswith("boot/")
