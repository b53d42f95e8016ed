"""`powernode image ...` refuses bad input before any work, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

from .harness import Cli


def test_bad_build_requests_are_refused_with_what_to_do(cli: Cli, tmp_path: Path) -> None:
    missing = cli.run("image", "build", "no-such-template", "--out", str(tmp_path), ok=False)
    assert missing.returncode != 0
    assert "template no-such-template" in missing.stdout + missing.stderr

    arch = cli.run("image", "build", "x", "--arch", "riscv64", "--out", str(tmp_path), ok=False)
    assert arch.returncode != 0
    assert "unknown architecture 'riscv64'; use one of: amd64, arm64" in arch.stdout + arch.stderr

    fmt = cli.run("image", "build", "x", "--format", "initramfs,floppy", ok=False)
    assert fmt.returncode != 0
    assert "unknown image format(s) floppy" in fmt.stdout + fmt.stderr
    assert not any(tmp_path.iterdir())  # nothing was built or half-written


def test_an_empty_registry_lists_nothing(cli: Cli) -> None:
    assert cli.run("image", "list", "--output", "json").json() == []
    shown = cli.run("image", "show", "01a22000-0000-7000-8000-000000000000", ok=False)
    assert shown.returncode != 0
    assert "does not exist" in shown.stdout + shown.stderr
