"""Regenerate the Python modules for ``protos/*.proto`` (or check they are up to date).

Usage (from the repository root, in the dev environment)::

    .venv/bin/python scripts/gen_protos.py          # rewrite torchwick/server/grpc/_generated
    .venv/bin/python scripts/gen_protos.py --check  # exit 1 if the committed files differ

Reproducibility: the script refuses to run unless the installed ``grpcio-tools`` is exactly
the version pinned in pyproject.toml's ``dev`` extra, because protoc's output (and the
protobuf/grpc runtime versions the generated code demands) depend on it. Every
post-processing step below is a literal text replacement that must match exactly once, so
a protoc upgrade that changes the generated text fails loudly instead of silently.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "torchwick" / "server" / "grpc" / "_generated"
#: Code generators whose exact versions shape the output; each is pinned in the dev extra.
GENERATORS = ("grpcio-tools", "mypy-protobuf")
PROTOS = ("inference.proto", "management.proto", "grpc_predict_v2.proto")
#: Protos whose descriptors go into a private pool instead of protobuf's default pool.
#: Package ``inference`` is also claimed by tritonclient's and KServe's own generated code;
#: two files defining ``inference.ModelInferRequest`` in one pool make the second import
#: fail ("duplicate symbol"), so ours must not share the default pool with them.
PRIVATE_POOL = ("grpc_predict_v2.proto",)

INIT_TEXT = '''"""Generated protobuf and gRPC modules for ``protos/*.proto``; do not edit.

Regenerate with ``python scripts/gen_protos.py`` (see protos/README.md). The KServe v2
messages (``grpc_predict_v2_pb2``) live in the private descriptor pool
``grpc_predict_v2_pb2.POOL`` so that they can be imported next to tritonclient or kserve.
"""
'''


def pinned_version(name: str) -> str:
    """The ``name==X`` pin of pyproject.toml's dev extra."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for req in data["project"]["optional-dependencies"]["dev"]:
        found = re.fullmatch(re.escape(name) + r"==([0-9][0-9.]*)", req.replace(" ", ""))
        if found:
            return found.group(1)
    raise SystemExit(f"pyproject.toml's dev extra must pin {name}==X.Y.Z")


def include_dirs() -> list[str]:
    """protoc include paths: our protos, protobuf's well-known types, googleapis' rpc types."""
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    spec = importlib.util.find_spec("google.rpc.status_pb2")
    if spec is None or spec.origin is None:
        raise SystemExit("googleapis-common-protos is needed for google/rpc/status.proto")
    googleapis = Path(spec.origin).parent.parent.parent
    if not (googleapis / "google" / "rpc" / "status.proto").is_file():
        raise SystemExit(f"no google/rpc/status.proto under {googleapis}")
    return [str(PROTO_DIR), str(well_known), str(googleapis)]


def replace_once(text: str, old: str, new: str, where: str) -> str:
    """Replace ``old`` by ``new`` exactly once, or stop: the generated text changed shape."""
    count = text.count(old)
    if count != 1:
        raise SystemExit(f"{where}: expected one {old!r}, found {count}; update gen_protos.py")
    return text.replace(old, new)


def postprocess(out: Path) -> None:
    """Make the generated modules importable as a package and isolate the KServe pool."""
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        # protoc's and mypy-protobuf's spellings of the import alias differ.
        for name, alias in (
            (f"{stem}_pb2_grpc.py", stem.replace("_", "__") + "__pb2"),
            (f"{stem}_pb2_grpc.pyi", f"_{stem}_pb2"),
        ):
            grpc_file = out / name
            grpc_file.write_text(
                replace_once(
                    grpc_file.read_text(encoding="utf-8"),
                    f"\nimport {stem}_pb2 as {alias}\n",
                    f"\nfrom . import {stem}_pb2 as {alias}\n",
                    name,
                ),
                encoding="utf-8",
            )
    for proto in PRIVATE_POOL:
        stem = proto.removesuffix(".proto")
        module = out / f"{stem}_pb2.py"
        text = replace_once(
            module.read_text(encoding="utf-8"),
            "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(",
            "POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(",
            module.name,
        )
        module.write_text(text, encoding="utf-8")
        stub = out / f"{stem}_pb2.pyi"
        text = replace_once(
            stub.read_text(encoding="utf-8"),
            "\nDESCRIPTOR: _descriptor.FileDescriptor\n",
            "\nPOOL: _descriptor_pool.DescriptorPool\nDESCRIPTOR: _descriptor.FileDescriptor\n",
            stub.name,
        )
        text = replace_once(
            text,
            "from google.protobuf import descriptor as _descriptor\n",
            "from google.protobuf import descriptor as _descriptor\n"
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            stub.name,
        )
        stub.write_text(text, encoding="utf-8")
    (out / "__init__.py").write_text(INIT_TEXT, encoding="utf-8")


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) for every proto into ``out``, then post-process."""
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", *(f"-I{d}" for d in include_dirs())]
    # Type stubs come from mypy-protobuf: grpcio-tools' own --pyi_out is not clean under
    # mypy --strict and has no stubs for the *_pb2_grpc modules.
    bin_dir = Path(sys.executable).parent
    args += [
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
    ]
    args += list(PROTOS)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    postprocess(out)


def tree(path: Path) -> dict[str, bytes]:
    """File name -> content of the generated files in ``path`` (caches ignored)."""
    return {p.name: p.read_bytes() for p in sorted(path.glob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    for tool in GENERATORS:
        want, have = pinned_version(tool), importlib.metadata.version(tool)
        if want != have:
            print(f"{tool} {have} installed, pyproject pins {want}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            current = tree(OUT_DIR) if OUT_DIR.is_dir() else {}
            wanted = tree(fresh)
            if current != wanted:
                stale = sorted(
                    n for n in set(current) | set(wanted) if current.get(n) != wanted.get(n)
                )
                print(f"generated code is stale: {', '.join(stale)}", file=sys.stderr)
                return 1
            print("generated code is up to date")
            return 0
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        shutil.copytree(fresh, OUT_DIR)
    print(f"wrote {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
