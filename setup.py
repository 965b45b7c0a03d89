"""Packaging glue: maps the repo's top-level folders onto `barkstream.*` and
generates the gRPC stubs as part of every install (no hand step)."""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
PROTO_DIR = ROOT / "protos"


def generate_stubs() -> None:
    """Run grpcio-tools' protoc on protos/barkstream/v1/*.proto, writing beside them."""
    from grpc_tools import protoc  # build requirement

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "barkstream" / "v1").glob("*.proto"))
    if not protos:
        return
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={PROTO_DIR}",
            f"--pyi_out={PROTO_DIR}", f"--grpc_python_out={PROTO_DIR}", *protos]
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
    finally:
        os.chdir(cwd)


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


def packages() -> tuple[list[str], dict[str, str]]:
    roots = {"barkstream": "protos/barkstream", "barkstream.services": "services", "barkstream.client": "client"}
    found = []
    for name, folder in roots.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            found.append(".".join([name, *rel.parts]) if rel.parts else name)
    return sorted(set(found)), roots


PACKAGES, PACKAGE_DIR = packages()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR, cmdclass={"build_py": BuildPyWithStubs})
