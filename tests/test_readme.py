"""The README's reading map never goes stale: every file, function, class and test its reading
table names exists, and every link of the README and of docs/ resolves."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\[([^\]]*)\]\(([^)#\s]+)(?:#[^)]*)?\)")


def reading_table() -> list[str]:
    """The rows of the table under "## Read the code in this order"."""
    section = README.split("## Read the code in this order", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]


def defined_names(path: Path) -> set[str]:
    """Every function and class defined in a Python file, as `name` and as `Class.method`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{item.name}" for item in node.body
                          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def test_the_reading_table_follows_the_arc_in_at_least_fifteen_rows():
    rows = reading_table()
    assert len(rows) >= 15
    numbers = [int(re.match(r"\|\s*(\d+)", row).group(1)) for row in rows]
    assert numbers == list(range(1, len(rows) + 1))
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
        assert len(cells) >= 5, row                      # #, concept, read, proven by, see it
        assert LINK.search(cells[2]) and LINK.search(cells[3]), row


@pytest.mark.parametrize("name,target", [m.groups() for row in reading_table() for m in LINK.finditer(row)])
def test_every_function_and_test_the_reading_table_names_exists(name, target):
    path = ROOT / target
    assert path.is_file(), f"{target} does not exist"
    if path.suffix == ".py":
        assert name in defined_names(path), f"{name} is not defined in {target}"


def test_every_link_of_the_readme_and_the_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages for _, target in LINK.findall(page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, broken


def test_the_readme_stays_a_path_not_a_notebook():
    """About 400 lines at most: tables, recipes and logs belong in docs/."""
    assert len(README.splitlines()) <= 400
