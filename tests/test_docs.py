"""The repository reads on its own: no references to things outside it, and every ``docs/<page>.md §N``
citation points at a section that exists; ``docs/fidelity.md``'s table names real config keys and marks exactly
what the ``released`` recipe sets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

DOCS = REPO / "docs"

# References to how the work is organised or to files that do not ship with the repository.
OUTSIDE_REFERENCE = re.compile(
    r"\b[Ii]ssues? #?\d+|\bDESIGN\.md\b|\.\./shared\b|\bthe lead\b",
)
# ``docs/design.md §4``, ``docs/design.md §4, §8``, ``docs/design.md §4-§6``
CITATION = re.compile(r"docs/([\w-]+)\.md((?:\s*(?:,|-|–|and)?\s*§\d+)+)")
SECTION_HEADING = re.compile(r"^#{2,3} (\d+)\. ", re.MULTILINE)


def _files(*patterns: str) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in REPO.glob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    return sorted(found)


def shipped_text_files() -> list[Path]:
    """What users read: the package, the notebooks' sources, the READMEs, the docs and the benchmarks."""
    return _files(
        "moediffir/**/*.py", "moediffir/**/*.json", "notebooks/*.py", "README.md", "docs/*.md",
        "data/README.md", "results/**/*.md", "bench/*",
    )


def test_the_scan_covers_the_package_and_the_docs():
    files = {p.relative_to(REPO).as_posix() for p in shipped_text_files()}
    assert {"README.md", "docs/design.md", "docs/fidelity.md", "moediffir/config/__init__.py"} <= files
    assert any(f.startswith("notebooks/") for f in files)


def test_the_pattern_sees_what_it_must_refuse():
    refused = ["see issue 12", "(Issue 3 item 2)", "issues 4 and 5", "in DESIGN.md §4", "../shared/datasets",
               "the lead wires it"]
    allowed = ["a leading dimension", "issued by the codec", "designs", "shared/datasets beside the repository"]
    assert all(OUTSIDE_REFERENCE.search(text) for text in refused)
    assert not any(OUTSIDE_REFERENCE.search(text) for text in allowed)


@pytest.mark.parametrize("path", shipped_text_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_reference_outside_the_repository(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    hits = [
        f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for m in OUTSIDE_REFERENCE.finditer(text)
    ]
    assert not hits, "references to things outside the repository:\n" + "\n".join(hits)


def _sections(page: str) -> set[int]:
    path = DOCS / f"{page}.md"
    if not path.is_file():
        return set()
    return {int(n) for n in SECTION_HEADING.findall(path.read_text(encoding="utf-8"))}


def test_docs_pages_number_their_sections():
    assert _sections("design") == set(range(1, 12))
    assert _sections("fidelity") == {1, 2, 3, 4}


def test_every_docs_citation_points_at_an_existing_section():
    files = _files("moediffir/**/*.py", "notebooks/*.py", "tests/**/*.py", "bench/*", "README.md", "docs/*.md",
                   "data/README.md", "results/**/*.md")
    citations, broken = 0, []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in CITATION.finditer(text):
            page, numbers = m.group(1), [int(n) for n in re.findall(r"§(\d+)", m.group(2))]
            sections = _sections(page)
            citations += 1
            missing = [n for n in numbers if n not in sections]
            if missing:
                line = text.count("\n", 0, m.start()) + 1
                broken.append(f"{path.relative_to(REPO)}:{line}: {m.group(0)!r} (docs/{page}.md lacks §{missing})")
    assert citations > 50  # the package's docstrings cite the design page throughout
    assert not broken, "citations of missing sections:\n" + "\n".join(broken)


def test_relative_links_in_docs_resolve():
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)}: broken link {target}"


# ------------------------------------------------------------------------------------------ docs/fidelity.md
FIDELITY = DOCS / "fidelity.md"
CONFIG_KEY = re.compile(r"`((?:model|data|stage1|stage2|sample|eval|ablation)\.\w+)`")


def _fidelity_rows() -> list[list[str]]:
    """The cells of the table of ``docs/fidelity.md`` §2 (one list per choice)."""
    text = FIDELITY.read_text(encoding="utf-8")
    section = text.split("## 2. ", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return [cells for cells in rows if cells[0].strip().isdigit()]  # not the header nor its rule


def test_fidelity_table_has_every_column():
    rows = _fidelity_rows()
    assert len(rows) >= 40
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(len(r) == 7 and all(c.strip() for c in r) for r in rows), "a row lacks a cell"


def test_fidelity_switches_are_config_keys():
    from dataclasses import fields

    from moediffir.config import resolve_config

    cfg = resolve_config("paper")
    for row in _fidelity_rows():
        for key in CONFIG_KEY.findall(row[6]):
            section, name = key.split(".")
            assert name in {f.name for f in fields(getattr(cfg, section))}, f"row {row[0]}: no config key {key}"


def test_fidelity_marks_exactly_what_the_released_recipe_sets():
    """Every key the ``released`` recipe sets is marked **R** in its row, and no other key is."""
    from moediffir.config import RECIPE_PAPER_SCALE, RECIPE_VALUES

    marked: set[str] = set()
    for row in _fidelity_rows():
        for part in re.split(r";\s*", row[6]):
            if "**R" in part:
                marked.update(CONFIG_KEY.findall(part))
    assert marked == set(RECIPE_VALUES["released"]) | set(RECIPE_PAPER_SCALE["released"])
