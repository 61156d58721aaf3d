"""``docs/architecture.md`` against the code: every path and name it cites exists, every module
of the package stands on one of its layers, and the real imports keep its layer rules."""

from __future__ import annotations

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs/architecture.md"
#: Where the layer table's modules live (tests and docs are no layer).
CODE = ("jaxspeech", "configs", "bench")
TOP_FILES = ("train.py", "evaluate.py")
#: A cited repository path, optionally with ``:Name`` or ``:Class.member`` defined in it.
CITED = re.compile(r"`((?:jaxspeech|configs|bench|tests|docs)/[^`\s<*]*|train\.py|evaluate\.py)`")
LAYER_ROW = re.compile(r"^\| (\d+) \|[^|]*\|([^|]*)\|")
EXCEPTION = re.compile(r"^- `([^`]+)` imports `([^`]+)`")


def doc_text() -> str:
    return DOC.read_text()


def python_files() -> list[pathlib.Path]:
    files = [REPO / name for name in TOP_FILES]
    for folder in CODE:
        files += sorted((REPO / folder).rglob("*.py"))
    return [path.relative_to(REPO) for path in files]


def defined_names(tree: ast.Module) -> dict[str, set[str]]:
    """``{top-level name: names defined in its body}`` (members for classes)."""
    names: dict[str, set[str]] = {}
    for node in tree.body:
        targets = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            targets = [node.name]
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        for name in targets:
            body = node.body if isinstance(node, ast.ClassDef) else []
            members = set()
            for child in body:
                if isinstance(child, ast.FunctionDef | ast.ClassDef):
                    members.add(child.name)
                elif isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name):
                    members.add(child.target.id)
                elif isinstance(child, ast.Assign):
                    members.update(t.id for t in child.targets if isinstance(t, ast.Name))
            names[name] = members
    return names


def test_every_cited_path_and_name_exists():
    cited = CITED.findall(doc_text())
    assert len(cited) > 40  # the doc cites the code throughout
    for reference in cited:
        path, _, name = reference.partition(":")
        assert (REPO / path).exists(), f"docs/architecture.md cites {path}, which is gone"
        if name:
            defined = defined_names(ast.parse((REPO / path).read_text()))
            top, _, member = name.partition(".")
            assert top in defined, f"{path} defines no {top!r}"
            assert not member or member in defined[top], f"{path}:{top} has no {member!r}"


def layers() -> dict[str, int]:
    """``{module path or folder/: layer}`` from the doc's layer table."""
    table = {}
    for line in doc_text().splitlines():
        row = LAYER_ROW.match(line)
        if row:
            for path in re.findall(r"`([^`]+)`", row.group(2)):
                table[path] = int(row.group(1))
    return table


def layer_of(path: pathlib.Path, table: dict[str, int]) -> int:
    """The layer of ``path``: its own row, else the longest folder row holding it."""
    text = path.as_posix()
    holders = [key for key in table if text == key or (key.endswith("/") and text.startswith(key))]
    assert holders, f"{text} stands on no layer of docs/architecture.md; add it to the table"
    return table[max(holders, key=len)]


def module_path(module: str) -> pathlib.Path | None:
    """The file of an imported ``jaxspeech`` module (``None`` for other packages)."""
    if module != "jaxspeech" and not module.startswith("jaxspeech."):
        return None
    base = REPO / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(REPO)
    return None


def imports(path: pathlib.Path) -> set[pathlib.Path]:
    """The package files that ``path`` imports, at the top or inside functions:
    ``from jaxspeech.x import y`` is ``jaxspeech/x/y.py`` where y is a module, else
    ``jaxspeech/x``'s own file."""
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [module_path(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                target = module_path(f"{node.module}.{alias.name}")
                targets.append(target or module_path(node.module))
        found.update(t for t in targets if t is not None and t != path)
    return found


def exceptions() -> set[tuple[str, str]]:
    return {
        (row.group(1), row.group(2))
        for line in doc_text().splitlines()
        if (row := EXCEPTION.match(line))
    }


def test_every_module_stands_on_a_layer():
    table = layers()
    assert set(table.values()) == set(range(1, max(table.values()) + 1))
    for path in python_files():
        layer_of(path, table)
    for key in table:
        assert (REPO / key).exists(), f"the layer table names {key}, which is gone"


def test_imports_keep_the_layer_rules():
    """A module imports only its own layer and those below, but for the exceptions the doc
    lists (each of which is a real import)."""
    table, allowed = layers(), exceptions()
    broken, used = [], set()
    for path in python_files():
        layer = layer_of(path, table)
        for target in imports(path):
            if layer_of(target, table) <= layer:
                continue
            pair = (path.as_posix(), target.as_posix())
            if pair in allowed:
                used.add(pair)
            else:
                broken.append(f"{pair[0]} (layer {layer}) imports {pair[1]}")
    assert not broken, "imports up the layers:\n" + "\n".join(broken)
    assert used == allowed, f"exceptions that no longer happen: {sorted(allowed - used)}"
