"""core/names.py owns every subject and bucket name: no module builds one of its own."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "bots", "tui", "cli", "ledger", "harness", "bench", "streams", "corral")
#: A string literal or f-string that starts a KV subject or stream, an API subject, an events or results subject.
INLINE = re.compile(r"""(?<![A-Za-z0-9_])[rbfRBF]{0,2}["'](\$KV\.|KV_|\$JS\.API|corral\.events|corral\.results)""")
#: No exemptions: every module takes its names from core/names.py.
PENDING: set[str] = set()


def inline_names() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "core/names.py" or rel in PENDING:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if INLINE.search(line):
                    found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_no_module_outside_core_names_spells_a_subject_or_bucket_inline():
    """Given the packages (tests and docs aside), when their string literals are read, then none starts a
    $KV., KV_, $JS.API, corral.events or corral.results name: those come from core/names.py."""
    assert inline_names() == []


def test_the_check_catches_an_inline_name():
    """Given a line with an f-string KV subject, when the pattern reads it, then it is caught."""
    assert INLINE.search('subject = f"$KV.{BUCKET}.{key}"')
    assert not INLINE.search("subject = kv_subject(BUCKET, key)")
