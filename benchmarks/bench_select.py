"""Filter-rule selection benchmark: `select_paths` and the `powernode module select` command
against `rsync -a --dry-run` on one tree.

Builds a deterministic tree in a temp dir (`--files` files, default 100,000, in about 2,000
directories up to six levels deep, mixed extensions and dot files, a few symlinks) and a
realistic 20-rule filter, checks that `select_paths`, the command and rsync select the same
paths, then times each `--repeats` times (default 5), alternating: the engine in process
(parse + walk), the command as a subprocess (`powernode module select TREE --rules F >
/dev/null`, start-up included) and rsync (output to /dev/null). Also times the command and
rsync on an empty tree (start-up alone). Prints one JSON object with the medians, the engine's
and the command's ratio to rsync, the target (both <= 1.5) and `pass`.

Run it with `.venv/bin/python benchmarks/bench_select.py [--files N] [--repeats N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from powernode.modules.filters import FilterRules, select_paths

TARGET_RATIO = 1.5
TOPS = ["etc", "home", "opt", "srv", "usr", "var"]
DIR_WORDS = ["lib", "share", "doc", "cache", "log", "conf", "bin", "src", "data", "tmp",
             ".cache", "__pycache__", "Downloads", "static", "include", "locale"]  # fmt: skip
EXTENSIONS = ["conf", "txt", "log", "py", "pyc", "so", "json", "gz", "tmp", "bak", "md",
              "html", "yaml", "sh", "c", "h", ""]  # fmt: skip
RULES = """\
# a host backup: configuration, homes without caches, services, logs without archives
- *.tmp
- *.bak
- *~
- .cache/
- **/__pycache__/
+ /etc/***
- /home/*/Downloads/
- /home/*/.local/share/Trash/
+ /home/***
+ /opt/
+ /opt/*/
+ /opt/*/conf/***
- /var/cache/
- /var/tmp/***
- /var/log/**.gz
+ /var/***
+ /usr/
+ /usr/local/***
+ /srv/*/data/**.json
- *
"""


def build_tree(root: Path, files: int, seed: int = 20240601) -> int:
    """Create the tree under `root`; return how many directories it has."""
    rng = random.Random(seed)
    dirs = [root / top for top in TOPS]
    for top in TOPS:
        for n in range(3):
            dirs.append(root / top / f"{rng.choice(DIR_WORDS)}{n}")
    dirs += [root / "home" / "user1" / ".cache", root / "usr" / "local" / "bin"]
    while len(dirs) < files // 50:
        parent = rng.choice(dirs)
        if len(parent.relative_to(root).parts) < 6:
            word = rng.choice(DIR_WORDS)
            dirs.append(parent / (word if rng.random() < 0.3 else f"{word}{len(dirs)}"))
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        ext = rng.choice(EXTENSIONS)
        stem = rng.choice(["", ".", "x", "index", "main", "README", "f"]) + str(n)
        name = f"{stem}.{ext}" if ext else (stem + ("~" if n % 97 == 0 else ""))
        (rng.choice(dirs) / name).touch()
    for n in range(20):
        (rng.choice(dirs) / f"link{n}").symlink_to(rng.choice(dirs))
    return len(dirs)


def run_rsync(tree: Path, rules_file: Path, empty: Path, capture: bool) -> list[str]:
    """Run the rsync dry run; return its selected paths when `capture`."""
    proc = subprocess.run(
        ["rsync", "-a", "--dry-run", "--out-format=%n", f"--filter=merge {rules_file}",
         f"{tree}/", f"{empty}/"],
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
        check=True,
    )  # fmt: skip
    return sorted(line for line in (proc.stdout or "").splitlines() if line != "./")


POWERNODE = str(Path(sys.executable).parent / "powernode")


def run_command(tree: Path, rules_file: Path, capture: bool) -> list[str]:
    """Run `powernode module select`; return its lines when `capture`."""
    proc = subprocess.run(
        [POWERNODE, "module", "select", str(tree), "--rules", str(rules_file)],
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
        check=True,
    )
    return (proc.stdout or "").splitlines()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="powernode-bench-select-") as tmp:
        tree, empty, rules_file = Path(tmp, "tree"), Path(tmp, "empty"), Path(tmp, "rules")
        empty.mkdir()
        rules_file.write_text(RULES)
        dirs = build_tree(tree, args.files)
        bare = Path(tmp, "bare")
        bare.mkdir()
        ours = select_paths(tree, FilterRules.parse(RULES))
        theirs = run_rsync(tree, rules_file, empty, capture=True)
        command = run_command(tree, rules_file, capture=True)
        same = ours == theirs == command
        times: dict[str, list[float]] = {k: [] for k in ("engine", "command", "rsync")}
        start_up: dict[str, list[float]] = {"command": [], "rsync": []}
        for _ in range(args.repeats):
            times["engine"].append(timed(lambda: select_paths(tree, FilterRules.parse(RULES))))
            times["command"].append(timed(lambda: run_command(tree, rules_file, capture=False)))
            times["rsync"].append(timed(lambda: run_rsync(tree, rules_file, empty, False)))
            start_up["command"].append(timed(lambda: run_command(bare, rules_file, False)))
            start_up["rsync"].append(timed(lambda: run_rsync(bare, rules_file, empty, False)))
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["engine"] / median["rsync"]
    command_ratio = median["command"] / median["rsync"]
    result = {
        "benchmark": "select_paths and powernode module select vs rsync -a --dry-run",
        "files": args.files,
        "dirs": dirs,
        "rules": sum(1 for line in RULES.splitlines() if line and line[0] in "+-"),
        "selected": len(ours),
        "same_selection": same,
        "repeats": args.repeats,
        "select_paths_median_s": round(median["engine"], 4),
        "command_median_s": round(median["command"], 4),
        "rsync_median_s": round(median["rsync"], 4),
        "ratio": round(ratio, 3),
        "command_ratio": round(command_ratio, 3),
        "empty_tree_command_median_s": round(statistics.median(start_up["command"]), 4),
        "empty_tree_rsync_median_s": round(statistics.median(start_up["rsync"]), 4),
        "target": f"ratio <= {TARGET_RATIO} and command_ratio <= {TARGET_RATIO}",
        "pass": same and max(ratio, command_ratio) <= TARGET_RATIO,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
