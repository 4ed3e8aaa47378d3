#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts the local real services
# (Kafka, FerretDB, moto, ONNX Runtime) if needed, then runs every Rust test against them.
# Services are left running for the next run; `deploy/local/down.sh` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/local/up.sh
# shellcheck source=../deploy/local/env.sh
. deploy/local/env.sh

cargo test --workspace --locked "$@"
