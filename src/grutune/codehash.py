"""What code computed a result: a digest of Python source that ignores comments, docstrings and formatting, and the
grutune modules that a module reaches through its imports (read from the source, nothing is imported).

A sweep's identity covers the digests of its trial's modules (`grutune.sweep.definition`), and dvc.yaml's deps are
checked against the same import graph (tests/test_dvc_yaml.py).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PACKAGE", "imported_modules", "module_file", "reachable", "source_digest"]

PACKAGE = Path(__file__).resolve().parent  # src/grutune


def module_file(name: str, package: Path = PACKAGE) -> Path | None:
    """The file of grutune module `name` ("grutune.gan.models": gan/models.py, or gan/models/__init__.py)."""
    parts = name.split(".")[1:]
    base = package.joinpath(*parts)
    for path in (base.parent / f"{base.name}.py" if parts else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _parents(name: str) -> list[str]:
    """The packages Python runs first when it imports `name`: grutune.gan.models -> grutune, grutune.gan."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(path: Path, package: Path = PACKAGE) -> set[str]:
    """The grutune modules a file imports, at any depth of the file (lazy imports too). `from grutune.x import y`
    names module grutune.x.y where that is a module, else grutune.x."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "grutune":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if module_file(sub, package) is not None else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "grutune"}
    return out


def reachable(roots: Iterable[str], *, exclude: Iterable[str] = (), package: Path = PACKAGE) -> dict[str, Path]:
    """{module: file} of every grutune module that importing `roots` runs: their imports, transitively, and the
    packages' `__init__`s on the way. A module in `exclude` (or under a package named there) is neither taken nor
    followed."""
    skip = tuple(exclude)
    out: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in out or any(name == s or name.startswith(s + ".") for s in skip):
            continue
        path = module_file(name, package)
        if path is None:
            continue
        out[name] = path
        todo += [*_parents(name), *imported_modules(path, package)]
    return dict(sorted(out.items()))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: Path) -> str:
    """A digest of what a Python file does: its syntax tree without docstrings, so comments, docstrings and
    formatting do not change it, and any change to the code does."""
    tree = _strip_docstrings(ast.parse(path.read_text()))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:16]
