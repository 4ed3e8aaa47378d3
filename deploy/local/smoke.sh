#!/usr/bin/env bash
# End-to-end check of the running local services (after deploy/local/up.sh).
#
#   deploy/local/smoke.sh [service...]   services: kafka ferretdb moto ort
#                                        (default: all of them)
#
#   kafka     create a topic, produce one message, consume it back (Kafka's own
#             console tools), delete the topic
#   ferretdb  pymongo ping/insert/find/delete
#   moto      boto3: SQS create/send/receive, S3 create bucket/put/get
#   ort       dlopen $ORT_DYLIB_PATH + run a tiny ONNX model
#
# Exits non-zero if any check fails.
set -euo pipefail
shopt -s inherit_errexit

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
# shellcheck source=env.sh
. "$SY_LOCAL_DIR/env.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

services=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    *)
      sy_is_service "$arg" || sy_die "unknown service '$arg' (known: ${SY_ALL_SERVICES[*]})"
      services+=("$arg")
      ;;
  esac
done
((${#services[@]})) || services=("${SY_ALL_SERVICES[@]}")

[[ -x "$SY_VENV/bin/python" ]] || sy_die "no venv at $SY_VENV; run deploy/local/up.sh first"

# Runs inside `if`, where set -e is off: every step checks its own status.
# shellcheck disable=SC2329 # invoked through the fn array below
smoke_kafka() {
  local topic="switchyard-smoke-$$-$RANDOM" got
  local bs="$SWITCHYARD_KAFKA_BROKERS"
  [[ -d "$SY_KAFKA_HOME/libs" ]] || {
    echo "jars missing; run deploy/local/up.sh kafka"
    return 1
  }
  sy_kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" \
    --create --topic "$topic" --partitions 1 --replication-factor 1 >/dev/null || return 1
  printf 'hello-kafka\n' | sy_kafka_tool org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server "$bs" --topic "$topic" --producer-property acks=all || return 1
  got="$(sy_kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$bs" \
    --topic "$topic" --from-beginning --max-messages 1 --timeout-ms 60000 2>/dev/null)" || return 1
  sy_kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" \
    --delete --topic "$topic" >/dev/null || return 1
  [[ "$got" == "hello-kafka" ]] || {
    echo "expected 'hello-kafka', consumed '$got'"
    return 1
  }
  echo "topic create/produce/consume/delete ok at $bs"
}

failed=0
for svc in "${services[@]}"; do
  t0="$(sy_now)"
  case "$svc" in
    kafka) fn=(smoke_kafka) ;;
    ferretdb) fn=("$SY_VENV/bin/python" "$SY_LOCAL_DIR/smoke.py" mongo) ;;
    moto) fn=("$SY_VENV/bin/python" "$SY_LOCAL_DIR/smoke.py" aws) ;;
    ort) fn=("$SY_VENV/bin/python" "$SY_LOCAL_DIR/smoke.py" ort) ;;
  esac
  if out="$("${fn[@]}" 2>&1)"; then
    out="${out##*$'\n'}"
    printf '%-9s OK   (%ss) %s\n' "$svc" "$(sy_since "$t0")" "${out#OK    }"
  else
    failed=1
    printf '%-9s FAIL (%ss)\n%s\n' "$svc" "$(sy_since "$t0")" "$out"
  fi
done
exit "$failed"
