"""`powernode module ...` and `template preview|compose` end to end, as an operator runs them."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from .harness import Cli

pytestmark = pytest.mark.slow


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return root


def test_select_prints_what_rsync_would_transfer(cli: Cli, tmp_path: Path) -> None:
    tree = write(tmp_path / "tree", {"etc/a.conf": "", "etc/b.txt": "", "usr/c.conf": ""})
    rules = write(tmp_path, {"rules": "+ */\n+ *.conf\n- *\n"}) / "rules"
    result = cli.run("module", "select", str(tree), "--rules", str(rules))
    assert result.stdout == "etc/\netc/a.conf\nusr/\nusr/c.conf\n"
    bad = write(tmp_path, {"bad": "+ ok\nx nope\n"}) / "bad"
    failure = cli.fails("module", "select", str(tree), "--rules", str(bad))
    assert "line 2" in failure.stderr


def test_import_preview_and_compose_a_template(cli: Cli, tmp_path: Path) -> None:
    base = write(
        tmp_path / "base",
        {
            "module.toml": """
            name = "base"
            version = "1.0"
            package_spec = ["ca-certificates"]
        """,
            "etc/hostname": "node\n",
            "usr/share/doc/base/README": "docs\n",
        },
    )
    os.symlink("hostname", base / "etc/hostname.link")
    (base / "etc/hostname").chmod(0o640)
    write(
        tmp_path / "docker",
        {
            "module.toml": """
            name = "docker"
            version = "24.0.7"
            mask = ["/usr/share/doc/"]
            [dependency_spec]
            base = ">=1.0"
        """,
            "etc/docker/daemon.json": '{"log-driver": "json-file"}\n',
        },
    )
    write(
        tmp_path / "tuned",
        {
            "module.toml": """
            name = "docker-tuned"
            version = "1.0"
            extends = "docker >=24"
        """,
            "etc/docker/daemon.json": '{"log-driver": "journald"}\n',
        },
    )
    for name in ("base", "docker", "tuned"):
        cli.run("module", "import", str(tmp_path / name))
    shown = cli.json("module", "show", "docker@24.0.7")
    assert shown["spec"]["mask"] == ["/usr/share/doc/"]
    listed = cli.json("module", "list")
    assert {m["name"]: m["versions"] for m in listed}["docker"] == ["24.0.7"]
    cli.run("template", "create", "edge", "--module", "docker-tuned@1.0")
    preview = cli.json("template", "preview", "edge")
    assert [layer["name"] for layer in preview["layers"]] == ["base", "docker", "docker-tuned"]
    assert preview["conflicts"] == []
    assert preview["footprint"]["files"] == 2

    out = tmp_path / "rootfs"
    composed = cli.run("template", "compose", "edge", "--out", str(out))
    assert "composed edge" in composed.stdout
    assert (out / "etc/docker/daemon.json").read_text() == '{"log-driver": "journald"}\n'
    assert stat.S_IMODE((out / "etc/hostname").stat().st_mode) == 0o640
    assert os.readlink(out / "etc/hostname.link") == "hostname"
    assert not (out / "usr/share/doc").exists()

    again = cli.fails("template", "compose", "edge", "--out", str(out))
    assert "not empty" in again.stderr
    scripted = cli.json("template", "compose", "edge", "--out", str(tmp_path / "rootfs-2"))
    assert scripted["template"] == "edge"
    assert scripted["files_linked"] + scripted["files_copied"] == preview["footprint"]["files"]
    dupe = cli.fails("module", "import", str(tmp_path / "base"))
    assert "immutable" in dupe.stderr
