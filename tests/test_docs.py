"""The README and the docs pages: one laptop command, a short README, and no relative link to a missing file.

The site itself is built by `mkdocs build --strict` in CI (.ci/run), which also checks anchors and snippets.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SNIPPET = ROOT / "docs" / "snippets" / "laptop.sh"
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title")


def snippet_section(name: str) -> str:
    """A named section of docs/snippets/laptop.sh, as pymdownx.snippets includes it."""
    m = re.search(rf"# --8<-- \[start:{name}\]\n(.*?)# --8<-- \[end:{name}\]\n", SNIPPET.read_text(), re.S)
    assert m, f"{SNIPPET} has no section {name!r}"
    return m.group(1)


def relative_links(page: Path) -> list[str]:
    """Targets of the page's Markdown links that point into the repository (no URL, no bare anchor), outside code."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_quotes_the_laptop_command_verbatim():
    command = snippet_section("laptop")
    assert command.strip() and not command.lstrip().startswith("#")
    assert f"```bash\n{command}```" in README.read_text()


def test_the_laptop_benchmark_runs_the_snippets_command():
    spec = importlib.util.spec_from_file_location("laptop_run", ROOT / "benchmarks" / "laptop_run.py")
    laptop_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(laptop_run)
    assert laptop_run.laptop_command("mnist") == shlex.split(snippet_section("laptop"))
    assert laptop_run.laptop_command("fashion_mnist")[-1] == "dataset=fashion_mnist"


def test_the_docs_include_the_snippet_not_a_copy():
    page = (ROOT / "docs" / "getting-started.md").read_text()
    assert '--8<-- "laptop.sh:laptop"' in page and '--8<-- "laptop.sh:mirror"' in page
    for p in PAGES:
        assert snippet_section("laptop").strip() not in p.read_text(), f"{p.name} copies the laptop command"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the detail into docs/"
    assert "## Install" in lines and "## Tests" in lines  # .ci/run's comments name these sections


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(page):
    missing = [t for t in relative_links(page) if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_check_finds_links():
    """The check above reads real links: the README links every docs page."""
    linked = {t.split("#", 1)[0] for t in relative_links(README)}
    assert {f"docs/{p.name}" for p in PAGES if p.name != "index.md"} <= linked


def test_the_architecture_map_says_what_each_package_imports():
    """docs/architecture.md's code map names, for each package or module, the grutune packages it imports: as the code
    does, so the map cannot drift from it."""
    from grutune.codehash import PACKAGE, imported_modules

    def unit(module: str) -> str:
        return module.split(".")[1]

    actual: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        name = f"{rel.parts[0]}/" if len(rel.parts) > 1 else rel.name
        own = rel.parts[0].removesuffix(".py")
        actual.setdefault(name, set()).update(u for u in map(unit, imported_modules(path)) if u != own)
    page = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+/|[a-z_]+\.py)` \| .* \|\s*([a-z_, ]*?)\s*\|$", page, re.M)
    documented = {name: {u.strip() for u in imports.split(",") if u.strip()} for name, imports in rows}
    assert documented == actual


@pytest.mark.parametrize("name", ["performance.md", "search_history.md"])
def test_the_performance_pages_hold_markers_not_rendered_tables(name):
    """The tables are rendered from benchmarks/results/ at build time (docs/gen_performance.py); a page whose source
    holds a rendered table would show stale figures forever."""
    text = (ROOT / "docs" / name).read_text()
    assert "<!-- table: " in text
    assert "Results: `benchmarks/results/" not in text, f"docs/{name} holds rendered tables: restore its markers"


def _gen_performance():
    spec = importlib.util.spec_from_file_location("gen_performance", ROOT / "docs" / "gen_performance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # an import renders nothing and writes nothing: only mkdocs-gen-files' run does
    return module


def test_importing_the_renderer_leaves_the_pages_alone():
    before = {name: (ROOT / "docs" / name).read_text() for name in ("performance.md", "search_history.md")}
    _gen_performance()
    assert {name: (ROOT / "docs" / name).read_text() for name in before} == before


def test_a_run_of_declared_seeds_shows_no_p_values_before_every_seed_is_in():
    gen = _gen_performance()
    comparison = {
        "mean_diff": 0.01,
        "mean_diff_ci95": [0.0, 0.02],
        "wins": 3,
        "ties": 0,
        "losses": 1,
        "wilcoxon_p_holm": 0.04,
    }
    arm = {
        "seeds": 4,
        "test_median": 0.86,
        "test_iqr": [0.85, 0.87],
        "trial_epochs_median": 200,
        "trial_epochs_range": [198, 204],
        "trials_median": 30,
    }
    d = {
        "declared": {"seeds": "2000-2019"},
        "summary": {"seeds_with_every_arm": 4, "grutune": arm, "comparisons": {"grutune_vs_random_asha": comparison}},
    }
    interim = gen.search_confirm_three_arms(d)
    assert "4 seeds of 20 done" in interim and "p=" not in interim
    d["declared"]["seeds"] = "2000-2003"
    final = gen.search_confirm_three_arms(d)
    assert "grutune − random + ASHA" in final and "p=0.04" in final
    assert "in flight reached" not in final
    arm["in_flight_reached"] = {"max_median": 23, "mean_median": 11.5}
    assert "| 23, 11.5 |" in gen.search_confirm_three_arms(d)  # the --in-flight runs: the levels reached


def test_the_candidates_table_gives_each_level_against_both_peers_and_the_bar():
    gen = _gen_performance()

    def c(mean, p):
        return {"mean_diff": mean, "mean_diff_ci95": [mean - 0.001, mean + 0.001], "wins": 5, "ties": 1, "losses": 2,
                "wilcoxon_p_holm_screen": p}  # fmt: skip

    d = {
        "verdict": {
            "declared": {"in_flight": [1, 32], "versus": ["grutune", "random_asha"], "alpha": 0.01, "harm": 0.05},
            "comparisons": {
                "random_top_k": {
                    "vs_grutune": {"1": c(0.002, 0.03), "32": c(0.005, 0.0001)},
                    "vs_random_asha": {"1": c(0.003, 0.2), "32": c(-0.004, 0.004)},
                },
                "grutune_pasha": {"vs_grutune": {"1": c(-0.006, 0.001)}, "vs_random_asha": {}},
            },
            "meets_bar": {"random_top_k": True, "grutune_pasha": None},
        }
    }
    rows = [line for line in gen.search_replay_candidates(d).splitlines() if line.startswith("| ")]
    cells = [[x.strip() for x in r.strip("|").split(" | ")] for r in rows]
    assert cells[0][1:4] == ["in flight", "against today's grutune", "against random + ASHA"]
    against_grutune, against_asha = "+0.50 (+0.40 to +0.60), 5–1–2, p=0.0001", "-0.40 (-0.50 to -0.30), 5–1–2, p=0.004"
    assert cells[2][1:] == ["32", against_grutune, against_asha, ""]
    assert "one epoch for every random config" in rows[1] and "| yes |" in rows[1] and "p=0.03" in rows[1]
    pasha = [r for r in rows if "PASHA" in r][0]
    assert "-0.60" in pasha and "not judged" in pasha and pasha.count("—") == 1  # no random + ASHA row yet
