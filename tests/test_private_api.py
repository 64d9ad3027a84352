"""grutune stands on Ray's and Optuna's public APIs: no module of src/ reaches into a private attribute or module.

An attribute whose name starts with one underscore, read on anything but `self` or `cls`, is private to someone
else; so is a module path with a part that starts with one. The allow-list is empty, and should stay so: where a
library lacks a hook, build on its public base class (see ../shared/STYLE.md, "Public APIs only").
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "grutune"
ALLOWED: set[tuple[str, str]] = set()  # (file under src/grutune, attribute or module): none


def private_uses(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom):
                modules += [f"{node.module}.{a.name}" for a in node.names]
            for m in modules:
                if any(part.startswith("_") and not part.startswith("__") for part in m.split(".")):
                    found.append((node.lineno, m))
    return sorted(found)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_module_uses_a_private_attribute_of_another(path):
    """Every module, in the subpackages (grutune.sweep, grutune.trials, ...) too."""
    where = path.relative_to(SRC).as_posix()
    uses = [(line, name) for line, name in private_uses(path.read_text()) if (where, name) not in ALLOWED]
    assert not uses, f"{where} uses private attributes or modules: {uses}"


def test_the_check_finds_what_it_is_for():
    bad = "import optuna\nfrom ray.tune.search.optuna import _x\nstudy._storage.get()\ntuner._local_tuner = 1\n"
    assert [name for _, name in private_uses(bad)] == ["ray.tune.search.optuna._x", "_storage", "_local_tuner"]
    assert private_uses("self._study = None\ncls._runs = {}\nx.__dict__\n") == []
