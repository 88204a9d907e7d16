#!/usr/bin/env bash
# Runs every test of the project: starts PostgreSQL and RabbitMQ when they are down,
# then the unit and integration tests (against the real services), the deployment checks,
# the TLS run and, last, the fault-injection run (both against a private broker and
# database of their own).
# This is the README's test command and what CI runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# Broker namespaces of test runs: the testkit's (testkit/src/lib.rs, weft_test_<uuid>),
# schemathesis.sh's (weft_st_<time>_<pid>) and clients.sh's (weft_cl_<time>_<pid>).
TEST_NAMESPACES='^(weft_test_|weft_st_|weft_cl_)'

# A test process killed before its cleanup (a cancelled run, a timeout) leaves its
# namespace's queues on the shared broker, where they pile up run after run. Deletes the
# queues of test namespaces none of whose queues has a consumer: a namespace still in use
# by a test running beside this one has its scheduler's or workers'.
sweep_test_queues() {
    local listing names
    if ! listing="$(rabbitmqctl -q list_queues --no-table-headers name consumers 2>&1)"; then
        echo "test: leftover test queues not swept: rabbitmqctl list_queues failed: ${listing%%$'\n'*}"
        return 0
    fi
    # An Erlang list of the queue names, for one `rabbitmqctl eval` that deletes them all
    # (one rabbitmqctl call per queue takes about a second each).
    names="$(awk -F '\t' -v namespaces="$TEST_NAMESPACES" '
        $1 ~ namespaces && $1 ~ /^[A-Za-z0-9_.]+$/ {
            split($1, parts, ".")
            namespace[$1] = parts[1]
            if ($2 > 0) live[parts[1]] = 1
        }
        END {
            separator = ""
            for (queue in namespace) if (!(namespace[queue] in live)) {
                printf "%s<<\"%s\">>", separator, queue
                separator = ","
            }
        }
    ' <<<"$listing")"
    if [[ -z "$names" ]]; then
        echo "test: no leftover test queues (weft_test_*, weft_st_*, weft_cl_*) on the shared broker"
        return 0
    fi
    local deleted
    if deleted="$(rabbitmqctl -q eval "length([N || N <- [$names], {ok, Q} <- [rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, N))], element(1, rabbit_amqqueue:delete(Q, false, false, <<\"weft-test-sweep\">>)) =:= ok])." 2>&1)"; then
        echo "test: deleted $deleted leftover test queues (weft_test_*, weft_st_*, weft_cl_*) from the shared broker"
    else
        echo "test: leftover test queues not swept: rabbitmqctl eval failed: ${deleted%%$'\n'*}"
    fi
}

bash deploy/local/services.sh
sweep_test_queues

# First, because it also installs promtool, which the metrics tests use.
echo "test: deployment checks"
bash deploy/check.sh

echo "test: cargo fmt --check"
cargo fmt --all --check

# The single sign-on tests sign in through a real OpenID provider: npm's oidc-provider.
echo "test: installing the test OpenID provider (npm ci, testkit/oidc-provider)"
npm ci --prefix testkit/oidc-provider --no-audit --no-fund --loglevel=error

echo "test: building the workspace and its tests"
cargo build --workspace --all-targets --locked

if command -v cargo-nextest >/dev/null 2>&1; then
    echo "test: cargo nextest run"
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "test: cargo test (cargo-nextest is not installed)"
    cargo test --workspace --locked --no-fail-fast
fi

# After the tests, on binaries the build above made: each of these starts its own gateway
# (and workers) against the local services.
echo "test: schemathesis against the served OpenAPI document"
WEFT_BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug" bash deploy/local/schemathesis.sh

echo "test: client generators (openapi-python-client, openapi-typescript) and the generated Python client"
WEFT_BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug" bash deploy/local/clients.sh

echo "test: load tester smoke run (a short chain4 against a fleet it starts)"
bash deploy/local/loadtest-smoke.sh

echo "test: TLS to PostgreSQL and RabbitMQ (private servers with a throwaway CA)"
bash deploy/local/tls.sh

echo "test: fault-injection run (restarts a private RabbitMQ node and PostgreSQL cluster)"
bash deploy/local/faults.sh
