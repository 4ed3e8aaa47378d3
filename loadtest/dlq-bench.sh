#!/usr/bin/env bash
# Measures `switchyard dlq` on a DLQ of N letters: fill, list, stats, replay (rate 0), replay again.
set -euo pipefail
# Usage: loadtest/dlq-bench.sh kafka|sqs [LETTERS]; needs the release builds of switchyard
# and dlq-fill, and the local services (deploy/local/up.sh).
cd "$(dirname "$0")/.."
. deploy/local/env.sh
kind=$1; n=${2:-5000}
run=$(date +%s%N | tail -c 9)
bin=target/release/switchyard
cfg=${TMPDIR:-/tmp}/dlqbench-$kind-$run.toml
if [ "$kind" = kafka ]; then
cat > $cfg <<TOML
[bus]
kind = "kafka"
[bus.kafka]
brokers = "$SWITCHYARD_KAFKA_BROKERS"
group_id = "bench-$run"
[store]
kind = "mongo"
[store.mongo]
database = "dlqbench_$run"
TOML
else
cat > $cfg <<TOML
[bus]
kind = "sqs"
[bus.sqs]
endpoint_url = "$AWS_ENDPOINT_URL"
region = "us-east-1"
queue_prefix = "b$run-"
[store]
kind = "embedded"
[store.embedded]
path = "${TMPDIR:-/tmp}/dlqbench-store-$run"
TOML
fi
for q in src dst; do cat >> $cfg <<TOML
[[backends]]
id = "bench-$q"
kind = "llm"
provider = "openai"
model = "gpt-4o-mini"
price = "openai/gpt-4o-mini"
tasks = ["chat"]
quality = 0.5
latency_prior = "100ms"
queue = "bench.$run.$q"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "BENCH_KEY"
TOML
done
export SWITCHYARD_OPERATOR=bench
t() { local s=$(date +%s.%N); "$@"; local e=$(date +%s.%N); echo "  $(echo "$e - $s" | bc) s" >&2; }
echo "== $kind, $n letters"
target/release/dlq-fill --config $cfg --queue bench.$run.dst --count 1 >/dev/null
t target/release/dlq-fill --config $cfg --queue bench.$run.src --count $n
echo "list:"; t sh -c "$bin dlq list --config $cfg --queue bench.$run.src | wc -l"
echo "stats:"; t sh -c "$bin dlq stats --config $cfg --queue bench.$run.src | tail -1"
echo "replay --rate 0:"; t $bin dlq replay --config $cfg --queue bench.$run.src --to bench.$run.dst --rate 0
echo "replay again:"; t $bin dlq replay --config $cfg --queue bench.$run.src --to bench.$run.dst --rate 0
