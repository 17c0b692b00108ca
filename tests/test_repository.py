"""Rules the repository keeps about its own tests and command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from repo_paths import REPO_ROOT as REPO

# A stopwatch: a clock used to measure (perf_counter, process_time), or an assert on a clock or an elapsed time.
# Speed is measured by bench/ scripts, which print ratios; a deadline for a wait (a timeout) is allowed.
STOPWATCH = re.compile(r"perf_counter|process_time|^\s*assert\b.*(monotonic\(|time\.time\(|\belapsed\b|_s\b\s*<)")


def test_no_test_asserts_on_elapsed_time():
    hits = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if STOPWATCH.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == [], "tests must not time things (use a timeout or a counter):\n" + "\n".join(hits)


def _subparsers(parser):
    import argparse

    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def test_every_command_a_message_names_exists():
    """Hints such as ``run `moediffir train stage1 --profile P` `` name commands and flags the CLI has, and
    notebook names that exist."""
    from moediffir.cli import build_parser

    notebooks = {p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py")}
    bad = []
    for path in sorted((REPO / "moediffir").rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"`moediffir ([a-z0-9][^`]*)`", text):
            words = [w.split("|")[0] for w in shlex.split(re.sub(r"\{[^}]*\}", "X", m.group(1))) if w != "..."]
            parser = build_parser()
            for word in words:
                subs = _subparsers(parser)
                if word.startswith("--"):
                    if word.split("=")[0] not in parser._option_string_actions:
                        bad.append(f"{path.name}: {m.group(0)} ({word})")
                elif subs:
                    if word not in subs:
                        bad.append(f"{path.name}: {m.group(0)} ({word})")
                        break
                    parser = subs[word]
        for m in re.finditer(r"\b(0[1-9]_[a-z][a-z0-9_]*[a-z0-9])\b", text):
            if m.group(1) not in notebooks:
                bad.append(f"{path.name}: notebook {m.group(1)}")
    assert bad == [], "\n".join(bad)
