"""Validating messages against the committed wire schemas (docs/schema/*.json) with jsonschema."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # jsonschema ships no type hints

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schema"


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator for ``docs/schema/<name>.json``."""
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the schema ``name``, as ``path: message`` lines (empty: it matches)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator(name).iter_errors(instance)]


def assert_matches(name: str, instance: Any) -> None:
    """Fail with every problem listed if ``instance`` does not match ``docs/schema/<name>.json``."""
    found = problems(name, instance)
    assert not found, f"{name}.json refuses {json.dumps(instance, default=str)[:500]}:\n  " + "\n  ".join(found)
