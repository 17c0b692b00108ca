"""The repository reads on its own: no references to things outside it, and every ``docs/<page>.md §N``
citation points at a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
    assert {"README.md", "docs/design.md", "moediffir/config.py"} <= files
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
    assert _sections("design") == set(range(1, 9))


def test_every_docs_citation_points_at_an_existing_section():
    files = _files("moediffir/**/*.py", "notebooks/*.py", "tests/*.py", "bench/*", "README.md", "docs/*.md",
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
