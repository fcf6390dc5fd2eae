#!/usr/bin/env bash
# Quick start, step 2: the whole test suite. Needs root: the end-to-end tests
# build private network namespaces (they never touch the machine's own
# network). Also checks formatting and lints, and runs the benchmark in a
# short smoke mode.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run-tests.sh needs root (it creates network namespaces)" >&2; exit 1; }
scripts/install-deps --for-tests
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
echo "== benchmark smoke run =="
target/debug/cnet-bench --sizes 1,10 --reps 5 --churn 1,4 --churn-seconds 1 --daemon-cost --physical-reps 2 --overlay-reps 2 --dns-reps 2 --dns-seconds 1 --datapath-seconds 1 --acl-scale 20 --plot "$(mktemp -d)/setup.png"
echo "== load run, short mode (docs/reliability.md: 8 clients for 600 s) =="
target/debug/cnet-bench --soak-seconds 10 --soak-clients 8
cargo test --workspace
echo "== fuzz targets, short mode (docs/reliability.md) =="
scripts/fuzz 10
echo "== the API against its OpenAPI document (schemathesis, short mode) =="
scripts/schemathesis 10 --exclude-checks positive_data_acceptance
