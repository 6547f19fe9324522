#!/usr/bin/env bash
# The job features working together against a running system (`./dev up` in another terminal):
# a scheduled job, a saga that compensates, a unique job refused, a cancelled running job, and a
# fleet-wide concurrency cap. Each step is also a test (tests/functional/test_features.py,
# test_limits.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

wait_for() {  # wait_for DESCRIPTION COMMAND...: poll up to 30 s
    local what=$1; shift
    for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "demo: timed out waiting for $what" >&2; exit 1
}
has_result() { corral job "$1" --json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["result"] else 1)'; }
has_event() { corral job "$1" --json | python3 -c "import json,sys; sys.exit(0 if any(e['type']=='$2' for e in json.load(sys.stdin)['events']) else 1)"; }

echo "== 1. a job scheduled 3 seconds ahead (a JetStream message schedule)"
id=$(corral submit sum a=2 b=3 --delay 3 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wait_for "the scheduled job" has_result "$id"
corral job "$id"

echo "== 2. a saga: reserve -> charge -> ship (fails); the compensations run in reverse"
id=$(python3 -c 'import hashlib; line=open("demo/saga.ndjson").read().splitlines()[0]; print(hashlib.sha256(f"saga.ndjson:1:{line}".encode()).hexdigest()[:32])')
corral submit --file demo/saga.ndjson
ship="$id-then0-then0"
wait_for "the second compensation" has_result "$ship-comp0-then0"
corral job "$ship"
corral job "$ship-comp0"
corral job "$ship-comp0-then0"

echo "== 3. a unique job: the second submit is refused while the first is pending or running"
corral submit sleep seconds=3 --unique nightly-report
if corral submit sleep seconds=3 --unique nightly-report; then echo "demo: expected a refusal" >&2; exit 1; fi

echo "== 4. a running job reports progress, then is cancelled"
id=$(corral submit sleep seconds=60 step=0.5 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wait_for "progress" has_event "$id" progress
corral cancel "$id"
wait_for "the cancellation" has_event "$id" cancelled
corral job "$id"

echo "== 5. a fleet-wide cap of 1 on sleep: three jobs run one at a time across every bot"
corral limit set sleep --concurrency 1
run=$(date +%s)
jobs=$(mktemp)
for n in 1 2 3; do echo "{\"id\": \"capped-$run-$n\", \"kind\": \"sleep\", \"args\": {\"seconds\": 1}}"; done > "$jobs"
corral submit --file "$jobs"        # all three at once
wait_for "a capped job running" sh -c "corral limit list --json | grep -q '\"slots_held\": 1'"
corral limit list                   # running 1 of 1
for n in 1 2 3; do wait_for "capped job $n" has_result "capped-$run-$n"; done
for n in 1 2 3; do corral job "capped-$run-$n" --json; done | python3 -c '
import json, sys
dec = json.JSONDecoder(); text = sys.stdin.read().strip(); jobs = []
while text:
    job, end = dec.raw_decode(text); jobs.append(job); text = text[end:].strip()
spans = sorted((r["started_at"], r["finished_at"]) for r in (j["result"] for j in jobs))
throttled = sum(e["type"] == "throttled" for j in jobs for e in j["events"])
assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "capped jobs overlapped"
print(f"3 jobs ran one after another; {throttled} deliveries were throttled (not counted as attempts)")'
rm -f "$jobs"
corral limit rm sleep
echo "== done"
