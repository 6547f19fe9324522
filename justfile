# corral recipes: each is a thin call of `corral` or pytest. Run them through ./dev on a fresh machine.

set positional-arguments

# list the recipes
default:
    @just --list

# start nats-server, provision, bots and the dashboard (the embedded default)
up *args:
    corral up "$@"

# run the whole test suite
test *args:
    pytest -q "$@"

# ruff and mypy, as CI runs them (the rule sets are in pyproject.toml)
lint:
    #!/usr/bin/env bash
    # both run, so one CI log shows every finding
    status=0
    ruff check . || status=1
    python .ci/typecheck || status=1
    exit $status

# the 3-node cluster failover test alone (it is also part of `test`)
test-cluster *args:
    pytest -q -m cluster "$@"

# check the deploy files with systemd-analyze, promtool and the Kubernetes/KEDA schemas
check-deploy:
    deploy/check

# the three-host partition test alone (network namespaces, root; it is also part of `test`)
test-netns *args:
    pytest -q -m netns "$@"

# open the dashboard against a running server
tui *args:
    corral tui "$@"

# create or update every stream, consumer and KV bucket
provision *args:
    corral provision "$@"

# streams, backlog and live bots
status *args:
    corral status "$@"

# run one bot in the foreground
bot *args:
    corral bot "$@"

# submit N generated jobs with progress
populate n="1000":
    corral populate {{n}}

# run a benchmark scenario (see docs/performance.md)
bench *args:
    corral bench "$@"

# start the 3-node cluster (cluster/*.conf) on loopback, provisioned R3; Ctrl-C stops it
cluster *args:
    corral cluster "$@"

# run the chaos suite: faults injected, every job accounted for
chaos *args:
    corral chaos "$@"

# the job features together against a running system (./dev up in another terminal)
demo:
    demo/features.sh

# remove the local JetStream store and logs
clean:
    rm -rf data
