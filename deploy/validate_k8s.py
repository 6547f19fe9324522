"""Validate deploy/k8s/*.yaml against the schemas the cluster would apply (run by deploy/check).

Built-in kinds (the Deployment) go through kubernetes-validate in strict mode: the
Kubernetes OpenAPI schemas, unknown fields refused. KEDA's ScaledObject is a custom
resource that kubernetes-validate has no schema for, so it is checked against KEDA's own
CRD schema, committed as deploy/k8s/schema/keda-scaledobject-v1alpha1.json, made strict
here the way the API server's field validation is (an object with declared properties takes
no others). Trigger metadata is a free string map in that schema, so the nats-jetstream
keys are checked by name against what KEDA's scaler reads. Finally the ScaledObject must
target a Deployment defined beside it.

    .venv/bin/python deploy/validate_k8s.py [FILE...]     # default: deploy/k8s/*.yaml

Prints one line per resource (then its problems); exits 1 when any has a problem, 2 when a file
cannot be read or parsed.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
KEDA_SCHEMA = HERE / "k8s" / "schema" / "keda-scaledobject-v1alpha1.json"
#: Kubernetes version the built-in kinds are checked against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.31"
#: The trigger metadata KEDA's nats-jetstream scaler reads (account or accountID is required).
NATS_JETSTREAM_KEYS = {"natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer",
                       "lagThreshold", "activationLagThreshold", "useHttps"}
NATS_JETSTREAM_REQUIRED = {"natsServerMonitoringEndpoint", "stream", "consumer"}
#: The CRD's CEL rules that check_scaled_object implements; any other rule fails the check
#: rather than being skipped silently after a schema update.
KNOWN_CEL = {"minReplicaCount must be less than or equal to maxReplicaCount"}


def strict(schema: object) -> object:
    """A copy where every object with declared properties refuses undeclared ones."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def cel_rules(schema: object) -> list[str]:
    if isinstance(schema, list):
        return [m for s in schema for m in cel_rules(s)]
    if not isinstance(schema, dict):
        return []
    own = [r["message"] for r in schema.get("x-kubernetes-validations", [])]
    return own + [m for v in schema.values() for m in cel_rules(v)]


def check_scaled_object(doc: dict, deployments: set[str]) -> list[str]:
    schema = json.loads(KEDA_SCHEMA.read_text())
    problems = [f"CEL rule not checked here: {m}" for m in cel_rules(schema) if m not in KNOWN_CEL]
    validator = jsonschema.Draft7Validator(strict(copy.deepcopy(schema)))
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        problems.append(f"{'.'.join(map(str, err.absolute_path)) or '(root)'}: {err.message}")
    spec = doc.get("spec") or {}
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
    target = (spec.get("scaleTargetRef") or {}).get("name")
    if target not in deployments:
        problems.append(f"spec.scaleTargetRef.name: {target!r} is not a Deployment in deploy/k8s ({sorted(deployments)})")
    for i, trig in enumerate(spec.get("triggers") or []):
        if trig.get("type") != "nats-jetstream":
            continue
        keys = set(trig.get("metadata") or {})
        where = f"spec.triggers.{i}.metadata"
        problems += [f"{where}: KEDA's nats-jetstream scaler has no key {k!r}" for k in sorted(keys - NATS_JETSTREAM_KEYS)]
        problems += [f"{where}: missing {k!r}" for k in sorted(NATS_JETSTREAM_REQUIRED - keys)]
        if not keys & {"account", "accountID"}:
            problems.append(f"{where}: needs 'account' or 'accountID'")
    return problems


def check_builtin(doc: dict) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.utils.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        return [f"no schema: {e}"]
    return []


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted((HERE / "k8s").glob("*.yaml"))
    try:
        docs = [(f, d) for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        print(f"validate_k8s: {e}", file=sys.stderr)
        return 2
    deployments = {d["metadata"]["name"] for _, d in docs if d.get("kind") == "Deployment"}
    failed = False
    for path, doc in docs:
        what = f"{path.name}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if doc.get("apiVersion") == "keda.sh/v1alpha1" and doc.get("kind") == "ScaledObject":
            problems, against = check_scaled_object(doc, deployments), "KEDA v1alpha1 CRD schema"
        else:
            problems, against = check_builtin(doc), f"Kubernetes {KUBERNETES_VERSION} schema, strict"
        failed |= bool(problems)
        print(f"{'FAIL' if problems else 'ok':<4}  {what} against the {against}")
        for p in problems:
            print(f"      {p}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
