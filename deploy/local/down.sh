#!/usr/bin/env bash
# Stop the local services that deploy/local/up.sh started.
#
#   deploy/local/down.sh [--purge] [service...]   services: kafka ferretdb moto ort
#                                                 (default: all of them)
#
# Sends SIGTERM to each service's process group (pid files under
# $SWITCHYARD_LOCAL_HOME/run), waits for it to exit (Kafka: up to 60s, others
# 20s; override with SWITCHYARD_KAFKA_STOP_TIMEOUT / SWITCHYARD_STOP_TIMEOUT),
# then SIGKILLs. Safe to run when nothing is running. Processes this kit did not
# start are never touched.
#
#   --purge   also delete the stopped services' data (Kafka log dir + cluster
#             id, FerretDB SQLite files), so the next up.sh starts empty.
#             Installs (jars, binary, venv) are kept.
set -euo pipefail
shopt -s inherit_errexit

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

purge=0
requested=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    --purge) purge=1 ;;
    all) requested+=("${SY_ALL_SERVICES[@]}") ;;
    *)
      sy_is_service "$arg" || sy_die "unknown service '$arg' (known: ${SY_ALL_SERVICES[*]})"
      requested+=("$arg")
      ;;
  esac
done
((${#requested[@]})) || requested=("${SY_ALL_SERVICES[@]}")

# Nothing was ever set up here: nothing to stop, and don't create directories.
if [[ ! -d "$SY_RUN" ]]; then
  sy_log "nothing to stop ($SY_RUN does not exist)"
  exit 0
fi

sy_lock

# Reverse of the start order; dependants first should there ever be any.
for ((i = ${#SY_ALL_SERVICES[@]} - 1; i >= 0; i--)); do
  svc="${SY_ALL_SERVICES[$i]}"
  wanted=0
  for r in "${requested[@]}"; do
    [[ "$r" == "$svc" ]] && wanted=1
  done
  ((wanted)) || continue
  [[ "$svc" == ort ]] && continue # a library, no process
  sy_stop "$svc" "$(sy_stop_timeout "$svc")"
  if ((purge)) && [[ -d "$SY_RUN/$svc" ]]; then
    rm -rf "${SY_RUN:?}/$svc"
    sy_log "$svc: purged $SY_RUN/$svc"
  fi
done
