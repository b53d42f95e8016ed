"""`powernode image ...`: boot artifacts built from a composed template.

`image build` composes the template through the control plane's API (its manifest and the
modules' packages), builds locally in cached stages (images/build.py) with progress, and
registers every artifact with the control plane (files uploaded by sha256, skipped when the
server has them). `image list` and `image show` read the registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from powernode.cli.common import OutputOption, state
from powernode.cli.output import OutputFormat, emit, stderr, stdout

COLUMNS = ("template", "arch", "format", "digest", "size", "kernel_version", "created_at", "id")

app = typer.Typer(
    help="Boot artifacts (initramfs, disk, ISO, iPXE, qcow2, bootc).", no_args_is_help=True
)


@app.command()
def build(
    ctx: typer.Context,
    template: str,
    arch: Annotated[str, typer.Option(help="amd64 or arm64.")] = "amd64",
    formats: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Comma-separated formats: initramfs,disk,iso,ipxe,qcow2,bootc (default: all).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default ./images/TEMPLATE-ARCH)."),
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Register the artifacts with the control plane.")
    ] = True,
    compression: Annotated[str, typer.Option(help="Initramfs compression: zstd or gzip.")] = "zstd",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Stage cache (default POWERNODE_IMAGE_CACHE_DIR).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Build boot artifacts for TEMPLATE; stages are cached, so a rerun resumes.

    With `-o json` progress goes to stderr and stdout carries one JSON document."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from powernode.cli.templates import fetch_blobs
    from powernode.images.build import BuildRequest, PackageWant, build_images, default_cache_dir
    from powernode.images.spec import arch_info, parse_formats
    from powernode.modules.entries import Entry

    cli = state(ctx)
    settings = cli.settings()
    client = cli.client()
    info = arch_info(arch)
    wanted = parse_formats(formats)
    row = client.get(f"/templates/{template}")
    manifest = client.get(f"/templates/{template}/manifest")
    preview = client.get(f"/templates/{template}/preview")
    package_doc = preview["footprint"]["packages"]
    if package_doc.get("conflicts"):
        first = package_doc["conflicts"][0]
        raise typer.BadParameter(f"template {template}: package conflict: {first}")
    entries = [Entry(**doc) for doc in manifest["entries"]]
    store = fetch_blobs(cli, client, entries)
    request = BuildRequest(
        template=row["name"],
        template_version=int(row.get("version", 0)),
        modules=manifest["modules"],
        arch=info,
        formats=wanted,
        entries=entries,
        store=store,
        packages=[
            PackageWant(
                p["name"],
                tuple((c["op"], c["version"], c["source"]) for c in p["constraints"]),
            )
            for p in package_doc["packages"]
        ],
        cache_dir=cache_dir or settings.image_cache_dir or default_cache_dir(),
        out_dir=out or Path("images") / f"{row['name']}-{arch}",
        suite=settings.image_suite,
        mirrors=tuple(settings.image_mirrors),
        mmdebstrap_mode=settings.image_mmdebstrap_mode,
        compression=compression,
        base_url=client.base_url,
    )
    console = stderr if output is OutputFormat.JSON else stdout
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as progress:
        task = progress.add_task(f"building {row['name']} ({arch})", total=None)

        def report(message: str) -> None:
            progress.update(task, description=message)
            if not console.is_terminal:
                console.print(message)

        result = build_images(request, report)
        registered: list[dict[str, Any]] = []
        if register:
            for artifact in result.document()["artifacts"]:
                report(f"registering {artifact['format']}")
                registered.append(
                    _register(
                        client,
                        settings.data_dir,
                        row["name"],
                        request,
                        result.inputs_digest,
                        result.kernel_version,
                        artifact,
                    )
                )
    if output is OutputFormat.JSON:
        document = {
            "template": row["name"],
            "arch": arch,
            "out_dir": str(request.out_dir),
            "inputs_digest": result.inputs_digest,
            "kernel_version": result.kernel_version,
            "artifacts": result.document()["artifacts"],
            "registered": [r.get("id") for r in registered],
        }
        emit(document, output)
        return
    for artifact in result.document()["artifacts"]:
        files = ", ".join(f["name"] for f in artifact["files"])
        stdout.print(
            f"{artifact['format']:10} {artifact['digest']}  {_size(artifact['size'])}  {files}"
        )
    stdout.print(f"output: {request.out_dir}  (inputs {result.inputs_digest})")
    if registered:
        stdout.print(f"registered {len(registered)} artifact(s) with {client.base_url}")


def _register(
    client: Any,
    data_dir: Path,
    template: str,
    request: Any,
    inputs_digest: str,
    kernel_version: str,
    artifact: dict[str, Any],
) -> dict[str, Any]:
    local = _local_store(data_dir)
    for f in artifact["files"]:
        if local is not None:
            # A control plane on this machine shares the store: a hard link, not an upload
            # (the HEAD below says whether the server we talk to is that one).
            local.adopt(Path(f["path"]), f["sha256"])
        if not client.exists(f"/images/blobs/{f['sha256']}"):
            with Path(f["path"]).open("rb") as handle:
                client.request(
                    "PUT",
                    f"/images/blobs/{f['sha256']}",
                    content=handle,
                    headers={"Content-Type": "application/octet-stream"},
                )
    body = {
        "template": template,
        "template_version": request.template_version,
        "arch": request.arch.name,
        "format": artifact["format"],
        "inputs_digest": inputs_digest,
        "kernel_version": kernel_version,
        "digest": artifact["digest"],
        "files": [{k: f[k] for k in ("name", "sha256", "size")} for f in artifact["files"]],
        "details": artifact["details"],
    }
    result: dict[str, Any] = client.post("/images", body)
    return result


def _local_store(data_dir: Path) -> Any:
    """The content store of a control plane whose data directory is on this machine and
    writable, else None."""
    from powernode.modules.store import ContentStore

    shared = data_dir / "content"
    if shared.is_dir() and os.access(shared, os.W_OK):
        return ContentStore(shared)
    return None


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"


@app.command("list")
def list_images(
    ctx: typer.Context,
    template: Annotated[str | None, typer.Option(help="Template name or id.")] = None,
    arch: Annotated[str | None, typer.Option(help="amd64 or arm64.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="One format.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Registered boot artifacts, newest first."""
    rows = state(ctx).client().get("/images", template=template, arch=arch, format=format)
    emit(rows, output, columns=COLUMNS)


@app.command()
def show(ctx: typer.Context, artifact_id: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """One registered boot artifact, with its files."""
    emit(state(ctx).client().get(f"/images/{artifact_id}"), output)
