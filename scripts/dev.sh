#!/usr/bin/env bash
# The README's first command: the whole system in one process on a sample workload.
#
#   scripts/dev.sh [switchyard dev options: --once, --jobs N, --json, --listen ADDR, ...]
#
# On a fresh machine it first installs what `switchyard dev` needs and nothing else: the ONNX
# Runtime library and the generated YOLOv8n model with its sample photos
# (`deploy/local/up.sh ort`, about 2 minutes, cached in ~/.cache/switchyard-local), then builds
# the release binary (about 10 minutes on 2 cores, the first time) and runs it. No service is
# started: the bus, the store and the LLM provider (simulated) all live inside the process.
# Setup output goes to stderr, so `--json` leaves only the summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/local/up.sh ort >&2
# shellcheck source=../deploy/local/env.sh
. deploy/local/env.sh

exec cargo run --release --locked --quiet -p switchyard -- dev "$@"
