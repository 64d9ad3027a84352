"""The Configuration page's parameter reference and preset tables, generated from conf/ when the site is built.

mkdocs-gen-files runs this script (mkdocs.yml). docs/configuration.md holds the prose and two markers,
`<!-- presets -->` and `<!-- reference -->`; each is replaced by tables read from conf/config.yaml (every key, its
default and its comment) and conf/<group>/*.yaml (each preset and what it overrides). The comments in conf/ are
the one source: a key without a row, or a row without a key, stops the build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import mkdocs_gen_files
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGE = "configuration.md"


@dataclass
class Entry:
    """One key of a YAML file as written: its dotted path and its comment lines (above it, beside it, below it)."""

    path: tuple[str, ...]
    comment: list[str] = field(default_factory=list)
    value: str = ""  # the value as written on the key's line; empty for a block mapping or list (on the lines below)


def split_comment(rest: str) -> tuple[str, str, int]:
    """`value  # comment` -> (value, comment, index of the `#` or -1); a `#` inside quotes is part of the value."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip(), i
    return rest.strip(), "", -1


def entries(text: str) -> dict[tuple[str, ...], Entry]:
    """Every key of a block-style YAML file with its comments, in file order.

    A comment line aligned with the inline comment above it continues that comment; other comment lines describe
    the key below them, or, when a blank line follows, the mapping they sit in. The file's header (the comments
    above its first key) describes the file, not a key.
    """
    out: dict[tuple[str, ...], Entry] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings around the current line
    pending: list[str] = []
    pending_indent = 0
    last: Entry | None = None  # the key whose inline comment a comment line may continue
    last_col = -1
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            if pending:  # a closing note: it describes the mapping it is indented into
                parent = tuple(k for i, k in stack if i < pending_indent)
                if parent in out:
                    out[parent].comment.extend(pending)
            pending, last = [], None
            continue
        if stripped.startswith("#"):
            if not out:
                continue
            text = comment_line(stripped)
            if last is not None and indent == last_col:
                last.comment.append(text)
            else:
                if not pending:
                    pending_indent = indent
                pending.append(text)
                last = None
            continue
        if stripped.startswith("- "):  # an item of a block list: part of the key above's value
            continue
        m = re.match(r"([A-Za-z_]\w*):(.*)$", stripped)
        if not m:
            raise SystemExit(f"gen_reference: cannot read this line: {line!r}")
        key, rest = m.groups()
        value, comment, at = split_comment(rest)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        stack.append((indent, key))
        entry = out[path] = Entry(path, [*pending, *([comment] if comment else [])], value)
        pending = []
        last, last_col = (entry, len(line) - len(rest) + at) if at >= 0 else (None, -1)
    return out


def keys(data: dict, written: dict[tuple[str, ...], Entry], prefix: tuple[str, ...] = ()) -> dict[tuple, object]:
    """Every key as written, block mappings included, in order: path -> value. A flow mapping is one value."""
    out: dict[tuple[str, ...], object] = {}
    for k, v in data.items():
        path = (*prefix, k)
        out[path] = v
        if isinstance(v, dict) and path in written and not written[path].value:
            out.update(keys(v, written, path))
    return out


def flow(value: object) -> str:
    """A value as it is written in YAML flow style, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip().removesuffix("\n...")


def comment_line(stripped: str) -> str:
    """One comment line's text; a line indented past its `#` is an example, set as code."""
    raw = stripped[1:]
    return f"`{raw.strip()}`" if raw.startswith("   ") and raw.strip() else raw.strip()


def cell(text: str) -> str:
    """Comment text for Markdown (a table cell too): no HTML, no column breaks, links to the docs pages it names."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):  # outside code spans
        part = parts[i].replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = re.sub(r"\bdocs/([\w-]+\.md)\b", r"[\1](\1)", part)
    return "".join(parts).replace("|", "\\|")


def comment_text(lines: list[str]) -> str:
    """Comment lines as one paragraph; a line that ends a sentence without a full stop gets one."""
    out = ""
    for line in filter(None, lines):
        if out and out[-1].isalnum() and line[0].isupper():
            out += "."
        out += (" " if out else "") + line
    return out


def read(path: Path) -> tuple[dict, dict[tuple[str, ...], Entry]]:
    text = path.read_text()
    return yaml.safe_load(text) or {}, entries(text)


def written_value(entry: Entry, value: object) -> str:
    """A key's value as conf/ writes it, as code; nothing for a mapping whose keys have rows of their own."""
    if entry.value:
        return f"`{entry.value}`"
    return "" if isinstance(value, dict) else f"`{flow(value)}`"


def rows_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
    )


def reference() -> str:
    """The top-level keys, then one table per section of conf/config.yaml: every key, its default, its comment."""
    data, found = read(CONF / "config.yaml")
    data.pop("defaults", None)
    written = {p: e for p, e in found.items() if p[0] != "defaults"}
    every = keys(data, written)
    missing = [".".join(p) for p in every if p not in written]
    extra = [".".join(p) for p in written if p not in every]
    if missing or extra:
        raise SystemExit(f"gen_reference: conf/config.yaml read wrongly: missing {missing}, unknown {extra}")

    def row(path: tuple[str, ...]) -> list[str]:
        entry = written[path]
        return [f"`{'.'.join(path)}`", written_value(entry, every[path]), cell(comment_text(entry.comment))]

    header = ["key", "default", "meaning"]
    scalars = [(k,) for k, v in data.items() if not (isinstance(v, dict) and not written[(k,)].value)]
    out = ["### Top-level keys\n", rows_table(header, [row(p) for p in scalars]) + "\n"]
    for top in data:
        if (top,) in scalars:
            continue
        out.append(f"### `{top}`\n")
        if written[(top,)].comment:
            out.append(cell(comment_text(written[(top,)].comment)) + "\n")
        out.append(rows_table(header, [row(p) for p in every if p[0] == top and len(p) > 1]) + "\n")
    return "\n".join(out)


def presets() -> str:
    """Every preset of every group in conf/: its description, and each key it sets against conf/config.yaml's."""
    base, base_written = read(CONF / "config.yaml")
    chosen = {k: v for d in base.get("defaults", []) if isinstance(d, dict) for k, v in d.items()}
    base_keys = keys({k: v for k, v in base.items() if k != "defaults"}, base_written)
    out = []
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        out.append(f"### `{group.name}` (`conf/{group.name}/`)\n")
        for file in sorted(group.glob("*.yaml")):
            data, found = read(file)
            header = [comment_line(line) for line in file.read_text().splitlines() if line.startswith("#")]
            header = [line for line in header if not line.startswith("@package")]
            default = " (default)" if chosen.get(group.name) == file.stem else ""
            out.append(f"#### `{group.name}={file.stem}`{default}\n")
            if header:
                out.append(cell(comment_text(header)) + "\n")
            rows = []
            for path, v in keys(data, found).items():
                if isinstance(v, dict) and not found[path].value:
                    continue
                if path not in base_keys:
                    raise SystemExit(f"gen_reference: {file.relative_to(ROOT)} sets {'.'.join(path)}, no such key")
                mine = written_value(found[path], v)
                rows.append(
                    [
                        f"`{'.'.join(path)}`",
                        mine,
                        written_value(base_written[path], base_keys[path]),
                        cell(comment_text(found[path].comment)),
                    ]
                )
            table = rows_table(["key", "this preset", "default", "note"], rows)
            out.append(table + "\n" if rows else "It sets no key: `conf/config.yaml` as it is.\n")
    return "\n".join(out)


def main() -> None:
    page = (ROOT / "docs" / PAGE).read_text()
    for marker, render in (("<!-- presets -->", presets), ("<!-- reference -->", reference)):
        if page.count(marker) != 1:
            raise SystemExit(f"gen_reference: docs/{PAGE} must hold {marker} exactly once")
        page = page.replace(marker, render())
    with mkdocs_gen_files.open(PAGE, "w") as f:
        f.write(page)
    mkdocs_gen_files.set_edit_path(PAGE, PAGE)


main()
