"""deploy/ agrees with the code and with itself: names, paths and metrics that no schema can check.

deploy/check proves each file with its own tool; these tests hold together what those tools
see separately: the image the manifest runs and the one the Containerfile builds, the
metrics the alerts use and the ones corral exports, the install layout the unit assumes and
the one docs/fleet.md describes.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from corral.bots.fleet_metrics import FleetMetrics
from corral.bots.metrics import BotMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def read(rel: str) -> str:
    return (ROOT / rel).read_text()


def exported_names() -> set[str]:
    """Every sample name a fleet supervisor or a bot can put on /metrics."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",)}
    names = set()
    for registry in (FleetMetrics("x").registry, BotMetrics("x").registry):
        for family in registry.collect():
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def unit_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in read("deploy/corral-fleet.service").splitlines():
        if re.fullmatch(r"\[\w+\]", line):
            current = sections.setdefault(line.strip("[]"), [])
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return sections


def test_the_manifest_runs_the_image_the_containerfile_says_it_builds():
    """Given deploy/, then bots.yaml's image, the Containerfile's header and both build commands name one tag, the package version."""
    containerfile = read("deploy/Containerfile")
    bots = read("deploy/k8s/bots.yaml")
    documented = re.search(r"^#\s+image: (\S+)$", containerfile, re.M).group(1)
    manifest = re.findall(r"^\s+image: (\S+)$", bots, re.M)
    built = re.findall(r"build -f deploy/Containerfile -t (\S+) \.", containerfile + bots)
    assert manifest == [documented], (manifest, documented)
    assert built and set(built) == {documented}, built
    version = tomllib.loads(read("pyproject.toml"))["project"]["version"]
    assert documented.endswith(f":{version}"), (documented, version)


def test_the_pod_runs_as_the_user_the_image_creates():
    """Given the Containerfile's user, then bots.yaml's runAsUser/runAsGroup are its uid and gid and the state volume is its home."""
    uid = re.search(r"useradd .*--uid (\d+)", read("deploy/Containerfile")).group(1)
    gid = re.search(r"groupadd .*--gid (\d+)", read("deploy/Containerfile")).group(1)
    bots = read("deploy/k8s/bots.yaml")
    assert f"runAsUser: {uid}" in bots and f"runAsGroup: {gid}" in bots
    assert "XDG_STATE_HOME=/var/lib/corral" in read("deploy/Containerfile") and "mountPath: /var/lib/corral}" in bots


def test_every_metric_the_alerts_and_their_tests_use_is_exported():
    """Given the alert rules and their promtool tests, then each corral_* name in them is a sample corral exports."""
    exported = exported_names()
    for rel in ("deploy/prometheus/corral-fleet-rules.yaml", "deploy/prometheus/corral-fleet-rules.test.yaml"):
        used = set(re.findall(r"\b(corral_[a-z_]+)\b", read(rel)))
        assert used and used <= exported, (rel, used - exported)


def test_the_alerts_name_no_scrape_job():
    """Given the alert rules, then no expression selects on a job name, so any scrape job works."""
    exprs = re.findall(r"expr: (.+(?:\n {12}.+)*)", read("deploy/prometheus/corral-fleet-rules.yaml"))
    assert len(exprs) == 4 and not [e for e in exprs if re.search(r"job\s*=~?", e)], exprs


def test_the_unit_keeps_its_settings_where_systemd_reads_them():
    """Given the unit, then StartLimit* are in [Unit], and the log directory it passes to the bots is the one systemd creates."""
    sections = unit_sections()
    assert "StartLimitIntervalSec=0" in sections["Unit"]
    assert not [line for line in sections["Service"] if line.startswith("StartLimit")]
    service = sections["Service"]
    assert "LogsDirectory=corral" in service and "StateDirectory=corral" in service
    exec_start = next(line for line in service if line.startswith("ExecStart="))
    assert "--log-dir %L/corral" in exec_start


def test_the_unit_and_the_docs_describe_one_install_layout():
    """Given the unit's ExecStart, then it is the venv path docs/fleet.md tells operators to create."""
    exec_start = next(line for line in unit_sections()["Service"] if line.startswith("ExecStart="))
    binary = exec_start.removeprefix("ExecStart=").split()[0]
    assert binary == "/opt/corral/.venv/bin/corral"
    assert binary in read("docs/fleet.md") and "python3 -m venv /opt/corral/.venv" in read("docs/fleet.md")


def test_the_analytics_retention_table_matches_the_stream_declarations():
    """Given docs/analytics.md's retention table, then each stream's days and size cap are those in streams/*.json."""
    import json

    declared = {d["name"]: d for d in (json.loads(p.read_text()) for p in (ROOT / "streams").glob("stream-*.json"))}
    rows = re.findall(r"^\| `(CORRAL_\w+)` \| ([^|]+) \|", read("docs/analytics.md"), re.M)
    assert {name for name, _ in rows} == {"CORRAL_RESULTS", "CORRAL_EVENTS", "CORRAL_DLQ"}, rows
    for name, retention in rows:
        stream = declared[name]
        days = int(re.search(r"(\d+) days", retention).group(1))
        assert stream["max_age"] == days * 86_400 * 10**9, (name, retention)
        size = re.search(r"(\d+) GiB", retention)
        assert stream["max_bytes"] == (int(size.group(1)) * 2**30 if size else -1), (name, retention)
        assert size or "no size limit" in retention, (name, retention)
