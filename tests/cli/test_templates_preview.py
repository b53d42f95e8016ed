"""`powernode template preview` as tables: everything the JSON holds that an operator acts on
(packages and their conflicts, each module's share, what masks and overrides took away), and
a failing exit status for package conflicts as for path conflicts."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from powernode.cli.output import EXIT_CODES
from powernode.cli.templates import conflict_summary, print_preview
from powernode.errors import Category

from .harness import Cli

PREVIEW: dict[str, Any] = {
    "template": "edge",
    "layers": [
        {"name": "base", "version": "1.0", "explicit": False, "required_by": ["web"]},
        {"name": "web", "version": "2.0", "explicit": True, "required_by": []},
    ],
    "conflicts": [
        {"path": "etc/x", "lower": "base@1.0", "upper": "web@2.0", "difference": "content"}
    ],
    "footprint": {
        "files": 7,
        "directories": 3,
        "symlinks": 1,
        "bytes": 4096,
        "packages": {
            "packages": [
                {
                    "name": "nginx",
                    "constraints": [
                        {"op": ">=", "version": "1.22", "source": "base"},
                        {"op": "<<", "version": "1.20", "source": "web"},
                    ],
                    "sources": ["base", "web"],
                },
                {"name": "curl", "constraints": [], "sources": ["web"]},
            ],
            "conflicts": [
                {
                    "package": "nginx",
                    "constraints": [
                        {"op": ">=", "version": "1.22", "source": "base"},
                        {"op": "<<", "version": "1.20", "source": "web"},
                    ],
                    "message": "package 'nginx': no version satisfies ...: they exclude each other",
                }
            ],
        },
        "modules": [
            {"module": "base@1.0", "files": 5, "bytes": 4000},
            {"module": "web@2.0", "files": 2, "bytes": 96},
        ],
        "masks": [
            {
                "module": "web@2.0",
                "removed": 12,
                "paths": [f"usr/share/doc/{n}" for n in "abcdefg"],
                "paths_truncated": True,
                "by_module": [{"module": "base@1.0", "paths": 12}],
            }
        ],
        "overrides": [{"module": "web@2.0", "overridden": 1, "paths": ["etc/motd"]}],
    },
}


def shown(capsys: pytest.CaptureFixture[str], result: dict[str, Any]) -> str:
    print_preview(result)
    out: str = capsys.readouterr().out
    return out


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"{needle!r} not in:\n{text}"
    return lines[0]


def test_the_table_shows_each_module_share_and_the_totals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Layers carry the files and bytes each module contributes."""
    out = shown(capsys, PREVIEW)
    assert line_with(out, "base ").split("│")[1:-1] == [
        " base ",
        " 1.0     ",
        " False    ",
        " web         ",
        " 5     ",
        " 4000  ",
    ]
    assert "7 files, 3 directories, 1 symlinks, 4096 bytes" in out


def test_the_table_shows_merged_packages_with_their_sources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each package with every constraint and the module that stated it."""
    out = shown(capsys, PREVIEW)
    assert "packages" in out
    nginx = line_with(out, "nginx   ")
    assert ">= 1.22 (base), << 1.20 (web)" in nginx
    assert "base, web" in nginx
    assert "any version" in line_with(out, "curl")


def test_the_table_shows_what_masks_and_overrides_removed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exact counts, the modules the paths came from, and a few of the paths."""
    out = shown(capsys, PREVIEW)
    mask = line_with(out, "usr/share/doc/a")
    assert "12" in mask
    assert "base@1.0: 12" in mask
    assert "usr/share/doc/e (+7 more)" in mask
    assert "usr/share/doc/f" not in mask
    override = line_with(out, "etc/motd")
    assert "web@2.0" in override


def test_the_table_shows_path_and_package_conflicts(capsys: pytest.CaptureFixture[str]) -> None:
    """Both kinds of conflict are listed, each with its sources."""
    out = shown(capsys, PREVIEW)
    assert "path conflicts" in out
    assert line_with(out, "etc/x ").count("@") == 2
    assert "package conflicts" in out
    assert "they exclude each other" in line_with(out, "no version satisfies")
    assert conflict_summary(PREVIEW) == "1 path conflict and 1 package conflict"


def test_a_footprint_without_the_optional_fields_still_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Older servers send fewer fields; the table shows what is there."""
    minimal = {
        "template": "t",
        "layers": [{"name": "a", "version": "1", "explicit": True, "required_by": []}],
        "conflicts": [],
        "footprint": {
            "files": 1,
            "directories": 0,
            "symlinks": 0,
            "bytes": 1,
            "masks": [{"module": "a@1", "removed": 2}],
        },
    }
    out = shown(capsys, minimal)
    assert "1 files" in out
    assert line_with(out, "a@1").split("│")[2].strip() == "2"
    assert conflict_summary(minimal) == ""


@pytest.mark.parametrize(
    ("paths", "packages", "summary"),
    [
        (0, 0, ""),
        (2, 0, "2 path conflicts"),
        (0, 3, "3 package conflicts"),
        (1, 2, "1 path conflict and 2 package conflicts"),
    ],
)
def test_conflict_summary(paths: int, packages: int, summary: str) -> None:
    """The stderr line counts each kind, in words."""
    result = {
        "conflicts": [{}] * paths,
        "footprint": {"packages": {"conflicts": [{}] * packages}},
    }
    assert conflict_summary(result) == summary


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return root


@pytest.mark.slow
def test_preview_fails_on_package_conflicts_like_on_path_conflicts(
    cli: Cli, tmp_path: Path
) -> None:
    """End to end: the table names the packages and the mask, and the command exits with the
    conflict status and one error line."""
    write(
        tmp_path / "base",
        {
            "module.toml": """
            name = "base"
            version = "1.0"
            package_spec = ["nginx (>= 1.22)", "ca-certificates"]
            """,
            "etc/motd": "hi\n",
            "usr/share/doc/base/README": "docs\n",
        },
    )
    write(
        tmp_path / "web",
        {
            "module.toml": """
            name = "web"
            version = "1.0"
            mask = ["/usr/share/doc/"]
            package_spec = ["nginx (<< 1.20)"]
            [dependency_spec]
            base = ">=1.0"
            """,
            "etc/web.conf": "x\n",
        },
    )
    for name in ("base", "web"):
        cli.run("module", "import", str(tmp_path / name))
    cli.run("template", "create", "edge", "--module", "web@1.0")
    failed = cli.fails("template", "preview", "edge")
    assert failed.returncode == EXIT_CODES[Category.CONFLICT]
    assert "template edge has 1 package conflict" in failed.stderr
    assert ">= 1.22 (base), << 1.20 (web)" in failed.stdout
    assert "ca-certificates" in failed.stdout
    mask = line_with(failed.stdout, "usr/share/doc")
    assert "web@1.0" in mask
    assert "base@1.0" in mask
    assert "package conflicts" in failed.stdout
    data = cli.json("template", "preview", "edge")  # JSON: the same facts, exit 0
    assert data["footprint"]["packages"]["conflicts"][0]["package"] == "nginx"
