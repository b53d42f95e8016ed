"""`powernode module select` as a user runs it: the real command against the real rsync, in
several locales, with odd file names and rules files that are not UTF-8."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from powernode.cli.output import error
from powernode.testing import POWERNODE

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")

NAMES = [b"a.conf", b"b.txt", b"a\nb", b"\xff.conf", b"\\#123", b"\r", b"z\r", b"tab\t",
         b"\xc3\xa9.conf", b"sp ace ", b"\x1b[31m"]  # fmt: skip
RULES = b"- *.txt\n- \xff*\n+ */\n+ *.conf\n+ *\n"


def odd_tree(root: Path) -> Path:
    for directory in (root, root / os.fsdecode(b"d\n\xfe")):
        directory.mkdir(parents=True)
        for name in NAMES:
            (directory / os.fsdecode(name)).touch()
    return root


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}


@needs_rsync
@pytest.mark.parametrize(
    "locale",
    [{"LC_ALL": "C.UTF-8"}, {"LC_ALL": "C"}, {"LANG": "C"}, {"LANG": "C.UTF-8"}, {}],
    ids=["LC_ALL=C.UTF-8", "LC_ALL=C", "LANG=C", "LANG=C.UTF-8", "no-locale"],
)
def test_prints_what_rsync_prints(tmp_path: Path, locale: dict[str, str]) -> None:
    """Sorted, byte for byte what `rsync -a --dry-run --out-format=%n` prints (less `./`),
    escapes included, in whatever locale both run; the rules file is not UTF-8."""
    assert RSYNC is not None
    tree, empty, rules = odd_tree(tmp_path / "tree"), tmp_path / "empty", tmp_path / "rules"
    empty.mkdir()
    rules.write_bytes(RULES)
    env = {**base_env(), **locale}
    ours = run([POWERNODE, "module", "select", str(tree), "--rules", str(rules)], env)
    assert ours.returncode == 0, ours.stderr
    rsync = [RSYNC, "-a", "--dry-run", "--out-format=%n", f"--filter=merge {rules}"]
    theirs = run([*rsync, f"{tree}/", f"{empty}/"], env)
    assert theirs.returncode == 0, theirs.stderr
    expected = sorted(line for line in theirs.stdout.split(b"\n")[:-1] if line != b"./")
    assert ours.stdout == b"".join(line + b"\n" for line in expected)


def test_the_full_command_line_path_prints_the_same(tmp_path: Path) -> None:
    """With a root option first, Typer parses everything; the output is the same."""
    tree, rules = odd_tree(tmp_path / "tree"), tmp_path / "rules"
    rules.write_bytes(RULES)
    fast = run([POWERNODE, "module", "select", f"--rules={rules}", str(tree)], os.environ.copy())
    full = run([POWERNODE, "--url", "http://127.0.0.1:9", "modules", "select", str(tree),
                "--rules", str(rules)], os.environ.copy())  # fmt: skip
    assert fast.returncode == full.returncode == 0, fast.stderr + full.stderr
    assert fast.stdout == full.stdout
    assert b"a.conf\n" in fast.stdout


@pytest.mark.parametrize(
    ("rules", "code", "message"),
    [
        (b"- a\n  \n", 2, "line 2: '  ': a line of only whitespace is not blank for rsync"),
        (b"foo [red]x[/red] \\[y\n", 2, "line 1: 'foo [red]x[/red] \\\\[y': unknown rule 'foo'"),
        (b"\xff x\n", 2, "line 1: '\\udcff x': unknown rule"),
    ],
)
def test_rule_errors_are_one_line_naming_file_and_line(
    tmp_path: Path, rules: bytes, code: int, message: str
) -> None:
    """A bad rule: exit 2 and one `error:` line with the file, the line as written (nothing
    read as markup) and what is wrong."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "rules").write_bytes(rules)
    result = run([POWERNODE, "module", "select", str(tmp_path / "tree"), "--rules",
                  str(tmp_path / "rules")], os.environ.copy())  # fmt: skip
    assert result.returncode == code
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith(f"error: {tmp_path / 'rules'} {message}"), stderr
    assert stderr.count("\n") == 1, stderr


def test_missing_inputs_are_one_line_errors(tmp_path: Path) -> None:
    """A missing tree is not-found (exit 5); an unreadable rules file names the file (exit 1);
    usage errors and --help are Typer's."""
    (tmp_path / "rules").write_bytes(b"- x\n")
    env = os.environ.copy()
    missing_tree = run([POWERNODE, "module", "select", str(tmp_path / "nope"), "--rules",
                        str(tmp_path / "rules")], env)  # fmt: skip
    assert (missing_tree.returncode, missing_tree.stderr.decode()) == (
        5,
        f"error: {tmp_path / 'nope'} is not a directory\n",
    )
    missing_rules = run([POWERNODE, "module", "select", str(tmp_path), "--rules",
                         str(tmp_path / "nope")], env)  # fmt: skip
    assert (missing_rules.returncode, missing_rules.stderr.decode()) == (
        1,
        f"error: {tmp_path / 'nope'}: No such file or directory\n",
    )
    usage = run([POWERNODE, "module", "select", str(tmp_path)], env)
    assert usage.returncode == 2
    assert b"--rules" in usage.stderr
    helped = run([POWERNODE, "module", "select", "--help"], env)
    assert helped.returncode == 0
    assert b"Usage: powernode module select" in helped.stdout


def test_error_messages_are_not_rich_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """`error` prints the message as it is: a hint like "write '[' as '\\['" keeps its
    backslash, and bracketed words stay."""
    error("write a literal '[' as '\\[' (not [bold]this[/bold])")
    assert (
        capsys.readouterr().err == "error: write a literal '[' as '\\[' (not [bold]this[/bold])\n"
    )
