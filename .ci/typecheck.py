"""Run mypy --strict on the packages as `cityops.*`.

The folders are installed under the `cityops` namespace by setuptools' package-dir mapping,
which mypy cannot follow in an editable install. This script builds a tree of symlinks
(build/typing/cityops/<package> -> <package>/) and points mypy at it, so every import of
`cityops.x` resolves to the working tree without a reinstall.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "routing", "traffic", "roadworks", "api", "simulators")


def main() -> int:
    tree = ROOT / "build" / "typing" / "cityops"
    tree.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = tree / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    args = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    for name in PACKAGES:
        args += ["-p", f"cityops.{name}"]
    env_path = str(tree.parent)
    return subprocess.call(args, cwd=ROOT, env={"MYPYPATH": env_path, "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    sys.exit(main())
