"""The wire schemas (docs/schema/) against the Structs they are generated from, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # jsonschema ships no type hints

from corral import contract
from corral.core.errors import InvalidJobError
from corral.core.messages import Event, EventType, Job, JobResult, encode, make_job
from tests.schemas import SCHEMA_DIR, assert_matches, problems


def test_the_committed_schemas_are_what_the_structs_generate(tmp_path: Path):
    """Given the Structs, when the schemas are regenerated into a temp dir, then they equal docs/schema/ file for file."""
    contract.write(tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
    assert not stale, f"docs/schema/ is out of date ({', '.join(stale)}): run `{contract.REGENERATE}` and commit the result"


def test_check_mode_names_the_stale_file_and_the_command_that_fixes_it(tmp_path: Path, capsys):
    """Given a schema dir with one edited and one extra file, when --check runs, then it exits 1 naming both and the command."""
    contract.write(tmp_path)
    (tmp_path / "job.json").write_text("{}\n")
    (tmp_path / "gone.json").write_text("{}\n")
    assert contract.main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "job.json: out of date" in err and "gone.json: no such message" in err and contract.REGENERATE in err
    contract.write(tmp_path)
    assert contract.main(["--check", str(tmp_path)]) == 0


@pytest.mark.parametrize("name", [m.name for m in contract.MESSAGES])
def test_every_schema_is_a_valid_draft_2020_12_schema_with_an_id_and_a_description(name: str):
    """Given a committed schema, when checked against the 2020-12 metaschema, then it is valid and says what it is."""
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"urn:corral:schema:{name}" and schema["title"] and schema["description"]


def test_a_made_job_with_steps_matches_the_job_schema():
    """Given a job built by make_job with a nested step without id, when validated, then the schema accepts it."""
    job = make_job("sum", {"a": 1}, then=[Job(kind="echo")], priority="high")
    assert_matches("job", json.loads(encode(job)))


@pytest.mark.parametrize("change", [
    {"id": ""}, {"id": "a.b"}, {"queue": "x y"}, {"priority": "urgent"}, {"kind": ""},
    {"timeout": 0}, {"timeout": 90_000}, {"max_attempts": 0}, {"max_attempts": 101}, {"unique_key": ""},
])
def test_a_job_that_validate_refuses_is_refused_by_the_schema_too(change: dict):
    """Given a job with one field out of range, when checked, then both Job.validate and job.json refuse it."""
    body = {**json.loads(encode(make_job("sum"))), **change}
    with pytest.raises(InvalidJobError):
        msgspec.convert(body, Job).validate()
    assert problems("job", body)


def test_a_job_without_an_id_is_refused_although_a_nested_step_may_lack_one():
    """Given a body with no id, when checked, then job.json refuses it (bots dead-letter it as invalid)."""
    body = json.loads(encode(make_job("sum")))
    del body["id"]
    assert any("'id' is a required property" in p for p in problems("job", body))


def test_encoded_results_and_events_match_their_schemas():
    """Given a result and a sparse event as the bots encode them, when validated, then both match."""
    job = make_job("sum", {"a": 1})
    result = JobResult(job_id=job.id, kind="sum", queue="default", bot="b1", incarnation="i1", attempt=1,
                       started_at=1.0, finished_at=2.0, value={"x": [1, 2]}, job=job)
    assert_matches("result", json.loads(encode(result)))
    assert_matches("event", json.loads(encode(Event(type=EventType.SUCCEEDED, ts=1.0, job_id=job.id, duration=0.5))))
    assert problems("event", {"type": "exploded", "ts": 1.0})


def test_resources_md_names_every_declared_resource_header_and_schema():
    """Given streams/*.json, the dead-letter headers and docs/schema/, when docs/resources.md is read, then it names every one."""
    from corral.core.messages import DeadLetterHeaders
    from corral.streams import load_declarations

    text = (SCHEMA_DIR.parent / "resources.md").read_text()
    names = [f"`{d.name}`" for d in load_declarations()]
    headers = [v for k, v in vars(DeadLetterHeaders).items() if k.isupper()]
    links = [f"(schema/{m.name}.json)" for m in contract.MESSAGES]
    missing = [n for n in [*names, *headers, *links] if n not in text]
    assert not missing, f"docs/resources.md does not mention {missing}"
