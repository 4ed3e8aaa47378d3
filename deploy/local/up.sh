#!/usr/bin/env bash
# Install (if needed) and start the local real services Switchyard tests use.
#
#   deploy/local/up.sh [service...]     services: kafka ferretdb moto ort
#                                       (default: all of them)
#
#   kafka     Apache Kafka 4.3.1, single-node KRaft   127.0.0.1:9092 (+9093 controller)
#   ferretdb  FerretDB v1.24.2 (MongoDB wire, SQLite) 127.0.0.1:27017
#   moto      moto 5.x server (S3, SQS, ...)          127.0.0.1:4566
#   ort       onnxruntime 1.31.1 shared library in the kit's venv (no process),
#             and the generated YOLOv8n model (tools/vision/make_yolov8n.py)
#
# Idempotent: services already running (pid file + live process + answering)
# are left alone. Installs are cached in ${SWITCHYARD_LOCAL_HOME:-~/.cache/switchyard-local}.
# Then: `source deploy/local/env.sh` for the connection variables, and
# deploy/local/down.sh to stop. See deploy/local/README.md.
set -euo pipefail
shopt -s inherit_errexit

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

requested=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    all) requested+=("${SY_ALL_SERVICES[@]}") ;;
    *)
      sy_is_service "$arg" || sy_die "unknown service '$arg' (known: ${SY_ALL_SERVICES[*]})"
      requested+=("$arg")
      ;;
  esac
done
((${#requested[@]})) || requested=("${SY_ALL_SERVICES[@]}")

# Canonical order, no duplicates.
services=()
for s in "${SY_ALL_SERVICES[@]}"; do
  for r in "${requested[@]}"; do
    if [[ "$s" == "$r" ]]; then
      services+=("$s")
      break
    fi
  done
done

sy_lock
overall_start="$(sy_now)"
declare -A install_note install_secs start_note start_secs launched_at

# --- Phase 1: installs (sequential; each is cached) -------------------------
sy_log "nasm (build tool for the JPEG decoder's SIMD): $(sy_install_nasm)"
for svc in "${services[@]}"; do
  t0="$(sy_now)"
  case "$svc" in
    kafka) note="$(sy_install_kafka)" ;;
    ferretdb) note="$(sy_install_ferretdb)" ;;
    moto | ort)
      if [[ -n "${venv_by:-}" ]]; then
        note="venv shared with $venv_by"
      else
        note="$(sy_install_venv)"
        venv_by="$svc"
      fi
      ;;
    *) sy_die "internal: no installer for $svc" ;;
  esac
  if [[ "$svc" == ort ]]; then
    note="$note; model $(sy_install_model)"
  fi
  install_note[$svc]="$note"
  install_secs[$svc]="$(sy_since "$t0")"
  sy_log "$svc: install ${note} (${install_secs[$svc]}s)"
done

# --- Phase 2: launch whatever is not running (all at once) ------------------
pending=()
for svc in "${services[@]}"; do
  if [[ "$svc" == ort ]]; then
    dylib="$(sy_ort_dylib)"
    [[ -n "$dylib" ]] || sy_die "ort: libonnxruntime.so* not found under $SY_VENV/lib"
    [[ "$dylib" == *".so.$SY_ORT_VERSION" ]] ||
      sy_warn "ort: expected onnxruntime $SY_ORT_VERSION, found $dylib"
    start_note[ort]="library only: $dylib"
    start_secs[ort]="-"
    continue
  fi
  port="$(sy_port_of "$svc")"
  if pid="$(sy_pid "$svc")"; then
    if sy_probe "$svc"; then
      start_note[$svc]="already running (pid $pid)"
      start_secs[$svc]="-"
      continue
    fi
    sy_log "$svc: pid $pid is alive but not answering yet; waiting for it"
    launched_at[$svc]="$(sy_now)"
    start_note[$svc]="was already starting (pid $pid)"
    pending+=("$svc")
    continue
  fi
  rm -f "$(sy_pidfile "$svc")"
  if sy_port_open "$port"; then
    if sy_probe "$svc"; then
      sy_warn "$svc: port $port already answers but was not started by this kit; using it as is"
      start_note[$svc]="answering on $port (not started by this kit)"
      start_secs[$svc]="-"
      continue
    fi
    sy_die "$svc: port $SY_HOST:$port is taken by a process that is not $svc (check: ss -ltnp 'sport = :$port')"
  fi
  launched_at[$svc]="$(sy_now)"
  sy_log "$svc: starting (log: $(sy_logfile "$svc"))"
  "sy_start_$svc"
  pending+=("$svc")
done

# --- Phase 3: wait until every launched service really answers -------------
failed=()
declare -A deadline
for svc in "${pending[@]}"; do
  deadline[$svc]="$(awk -v a="${launched_at[$svc]}" -v t="$(sy_start_timeout "$svc")" 'BEGIN { printf "%.3f\n", a + t }')"
done
while ((${#pending[@]})); do
  still=()
  for svc in "${pending[@]}"; do
    if sy_probe "$svc"; then
      start_secs[$svc]="$(sy_since "${launched_at[$svc]}")"
      start_note[$svc]="${start_note[$svc]:-started} (pid $(sy_pid "$svc" || echo '?'))"
      sy_log "$svc: ready after ${start_secs[$svc]}s"
      continue
    fi
    reason=""
    if ! sy_pid "$svc" >/dev/null; then
      reason="process exited"
    elif ! sy_before_deadline "${deadline[$svc]}"; then
      reason="not answering after $(sy_start_timeout "$svc")s"
    fi
    if [[ -n "$reason" ]]; then
      sy_warn "$svc: failed to start: $reason"
      sy_log_tail "$(sy_logfile "$svc")" 60
      sy_stop "$svc" 10 || true
      start_note[$svc]="FAILED: $reason (log: $(sy_logfile "$svc"))"
      start_secs[$svc]="$(sy_since "${launched_at[$svc]}")"
      failed+=("$svc")
      continue
    fi
    still+=("$svc")
  done
  pending=("${still[@]+"${still[@]}"}")
  if ((${#pending[@]})); then
    sleep 0.25
  fi
done

# --- Summary -----------------------------------------------------------------
printf '\n%-9s %-10s %-44s %-8s %s\n' SERVICE INSTALL "(what)" START "(state)"
for svc in "${services[@]}"; do
  secs="${start_secs[$svc]}"
  [[ "$secs" == "-" ]] || secs="${secs}s"
  printf '%-9s %-10s %-44s %-8s %s\n' "$svc" "${install_secs[$svc]}s" "${install_note[$svc]}" \
    "$secs" "${start_note[$svc]}"
done
printf 'total %ss; state and logs in %s\n' "$(sy_since "$overall_start")" "$SY_RUN"

if ((${#failed[@]})); then
  sy_die "failed to start: ${failed[*]}"
fi
printf 'ready. Connection settings: source deploy/local/env.sh\n'
