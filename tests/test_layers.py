"""The import rules of DESIGN.md §3, read from the source (ast): layers import one way
down, boto3/botocore only in the S3 client, pyfuse3 only in the FUSE adapter and the
daemon, nothing but the standard library (and zlib/hashlib) in the model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "s3fuse"

# lower number = lower layer; a module may import its own layer and those below
LAYERS = {"base": 0, "model": 0, "s3": 1, "spool": 2, "core": 3, "fuse": 4, "process": 5}
BASE = ("errors", "tasks")  # top-level modules every layer may use: errors, background tasks
THIRD_PARTY = {
    "boto3": {"s3"},
    "botocore": {"s3"},
    "pyfuse3": {"fuse", "process:daemon"},
    "trio": {"s3", "spool", "core", "fuse", "process", "base:tasks"},
    "cachetools": {"core"},
}
KNOWN: set[tuple[str, str]] = set()  # exceptions allowed while a refactor is under way


def layer_of(module: str) -> str:
    """'s3fuse.core.fs' -> 'core'; top-level modules other than BASE are the process."""
    parts = module.split(".")
    if parts[1] in ("model", "s3", "spool", "core", "fuse"):
        return parts[1]
    return "base" if parts[1] in BASE else "process"


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use s3fuse.<layer>.<module>)"
            base = node.module or ""
            found.add(base)
            if base == "s3fuse" or base.startswith("s3fuse."):
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def check(name: str, path: Path, mods: dict[str, Path]) -> set[tuple[str, str]]:
    """The imports of module `name` (source at path) that break the rules."""
    mine = layer_of(name)
    short = name.removeprefix("s3fuse.")
    bad = set()
    for imp in imports(path):
        top = imp.split(".")[0]
        if top == "s3fuse":
            if imp not in mods or imp == "s3fuse":
                continue  # a name imported from a module (from s3fuse.model.meta import X)
            if LAYERS[layer_of(imp)] > LAYERS[mine]:
                bad.add((short, imp.removeprefix("s3fuse.")))
        elif top in THIRD_PARTY:
            allowed = THIRD_PARTY[top]
            if mine not in allowed and f"{mine}:{short}" not in allowed:
                bad.add((short, top))
    return bad


def violations() -> set[tuple[str, str]]:
    mods = modules()
    bad: set[tuple[str, str]] = set()
    for name, path in mods.items():
        if name != "s3fuse":
            bad |= check(name, path, mods)
    return bad


def test_layers_import_one_way_down() -> None:
    bad = violations()
    assert bad - KNOWN == set(), f"imports against the layering: {sorted(bad - KNOWN)}"
    assert bad >= KNOWN, f"fixed, take off KNOWN: {sorted(KNOWN - bad)}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule itself: an upward import and a stray boto3 or pyfuse3 are reported."""
    src = tmp_path / "m.py"
    src.write_text("import boto3\nimport pyfuse3\nfrom s3fuse.core import fs\n"
                   "from s3fuse.model import meta\n")  # fmt: skip
    bad = check("s3fuse.model.fake", src, modules())
    assert bad == {
        ("model.fake", "boto3"), ("model.fake", "pyfuse3"), ("model.fake", "core"),
        ("model.fake", "core.fs"),
    }  # fmt: skip
    assert check("s3fuse.daemon", src, modules()) == {("daemon", "boto3")}


def test_type_checking_imports_are_not_used_at_run_time() -> None:
    """A name imported under `if TYPE_CHECKING:` (to break an import cycle) exists only for
    mypy: used in code rather than an annotation it fails at run time, and mypy does not
    say so."""
    bad = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        only_typing: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                for imp in ast.walk(node):
                    if isinstance(imp, ast.ImportFrom):
                        only_typing |= {a.asname or a.name for a in imp.names}
        if not only_typing:
            continue
        in_annotations = set()
        for node in ast.walk(tree):
            for field in ("annotation", "returns"):
                value = getattr(node, field, None)
                if value is not None:
                    in_annotations |= {id(n) for n in ast.walk(value)}
        bad += [
            f"{path.name}:{n.lineno} {n.id}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Name) and n.id in only_typing and id(n) not in in_annotations
        ]
    assert bad == []


def test_the_core_and_spool_load_without_boto3_or_pyfuse3() -> None:
    """Not only the import statements: loading the core (and the spool under it) pulls in
    neither boto3 nor pyfuse3; the S3 client is named in annotations only."""
    code = (
        "import sys, s3fuse.core.fs, s3fuse.spool.spool\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'pyfuse3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PKG.parent).stdout  # fmt: skip
    assert out.strip() == "[]"
