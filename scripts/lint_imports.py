"""Run import-linter's contracts (pyproject.toml, [tool.importlinter]) over the installed package layout.

The repository folders install as one package (`services/` is `barkstream.services`, `client/` is
`barkstream.client`, `protos/barkstream/v1` is `barkstream.v1`), but import-linter's graph builder
only reads a package laid out in one directory. So this copies the three trees into that layout in a
temporary directory and checks it there: the code checked is the code in the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = {"": ROOT / "protos" / "barkstream", "services": ROOT / "services", "client": ROOT / "client"}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="barkstream-imports-") as tmp:
        for name, source in TREES.items():
            shutil.copytree(source, Path(tmp, "barkstream", name), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env = {**os.environ, "PYTHONPATH": tmp}
        lint = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
                "sys.exit(c())", "--no-cache", str(ROOT / "pyproject.toml"), *sys.argv[1:]]
        return subprocess.run(lint, env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
