# shellcheck shell=bash
# Shared helpers for deploy/local/{up,down,smoke}.sh. Source it, don't run it.
#
# Layout (nothing is written inside the repository):
#   $SY_HOME                 ${SWITCHYARD_LOCAL_HOME:-$HOME/.cache/switchyard-local}
#   $SY_HOME/kafka-<ver>/    Kafka jars resolved from Maven Central
#   $SY_HOME/ferretdb-<ver>/ FerretDB binary built with `go build`
#   $SY_HOME/venv/           Python venv: moto server, onnxruntime, boto3, pymongo
#   $SY_HOME/models/, samples/ the generated YOLOv8n and the photos `switchyard dev` uses
#   $SY_HOME/run/            runtime state: <svc>.pid, logs/, kafka/, ferretdb/
#
# Everything here defines variables and functions only; it doesn't change
# shell options (the calling scripts use `set -euo pipefail`).

SY_LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SY_HOME="${SWITCHYARD_LOCAL_HOME:-$HOME/.cache/switchyard-local}"
SY_RUN="$SY_HOME/run"
SY_LOGS="$SY_RUN/logs"
SY_VENV="${SWITCHYARD_VENV:-$SY_HOME/venv}"

SY_KAFKA_VERSION="4.3.1" # default in kafka/pom.xml too
SY_FERRETDB_VERSION="v1.24.2"
# shellcheck disable=SC2034 # used by up.sh
SY_ORT_VERSION="1.31.1" # keep in sync with requirements.txt

SY_HOST="127.0.0.1"
SY_KAFKA_PORT=9092
SY_KAFKA_CONTROLLER_PORT=9093
SY_MONGO_PORT=27017
SY_MOTO_PORT=4566

SY_ALL_SERVICES=(kafka ferretdb moto ort)

SY_KAFKA_HOME="$SY_HOME/kafka-$SY_KAFKA_VERSION"
SY_FERRETDB_BIN="$SY_HOME/ferretdb-$SY_FERRETDB_VERSION/bin/ferretdb"

# JVM flags for the short-lived Kafka CLI tools: start fast, stay small.
SY_KAFKA_TOOL_JVM_OPTS=(-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -XX:-UsePerfData -Xshare:auto -Djava.awt.headless=true)
# JVM flags for the broker. Serial GC + C1-only JIT start noticeably faster on
# small CI boxes and are plenty for test traffic. Append with
# SWITCHYARD_KAFKA_JVM_OPTS (word-split on purpose).
SY_KAFKA_BROKER_JVM_OPTS=(-Xms256m -Xmx1G -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -XX:-UsePerfData -Xshare:auto -Djava.awt.headless=true)

# ---------------------------------------------------------------------------
# Output, timing, misc

sy_log() { printf '[switchyard-local] %s\n' "$*" >&2; }
sy_warn() { printf '[switchyard-local] WARNING: %s\n' "$*" >&2; }
sy_die() {
  printf '[switchyard-local] ERROR: %s\n' "$*" >&2
  exit 1
}

# Seconds since the epoch with sub-second precision (bash 5 EPOCHREALTIME).
sy_now() {
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    printf '%s\n' "${EPOCHREALTIME/,/.}"
  else
    date +%s
  fi
}

# sy_since START -> elapsed seconds with one decimal, e.g. "12.3".
sy_since() {
  awk -v a="$1" -v b="$(sy_now)" 'BEGIN { printf "%.1f\n", b - a }'
}

# sy_before_deadline DEADLINE -> true while now < DEADLINE.
sy_before_deadline() {
  awk -v d="$1" -v n="$(sy_now)" 'BEGIN { exit !(n < d) }'
}

sy_deadline_in() {
  awk -v n="$(sy_now)" -v t="$1" 'BEGIN { printf "%.3f\n", n + t }'
}

sy_require_cmd() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || sy_die "'$cmd' is required but not on PATH"
  done
}

sy_is_service() {
  local s
  for s in "${SY_ALL_SERVICES[@]}"; do
    [[ "$s" == "$1" ]] && return 0
  done
  return 1
}

sy_sha256() { sha256sum <"$1" | awk '{print $1}'; }

# Print the last lines of a log file to stderr, framed.
sy_log_tail() {
  local file="$1" lines="${2:-40}"
  [[ -f "$file" ]] || return 0
  printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
  tail -n "$lines" "$file" >&2 || true
  printf -- '----- end of %s -----\n' "$file" >&2
}

# Take an exclusive lock on $SY_HOME so concurrent up/down runs (parallel CI
# jobs, two terminals) serialize. FD 9 is closed again for every daemon we
# launch, so the lock never outlives the script.
sy_lock() {
  mkdir -p "$SY_HOME" "$SY_RUN" "$SY_LOGS"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$SY_HOME/.lock"
  if ! flock -w 900 9; then
    sy_die "timed out waiting for the lock $SY_HOME/.lock (another up/down.sh running?)"
  fi
}

# ---------------------------------------------------------------------------
# Processes

sy_port_open() { (exec 3<>"/dev/tcp/$SY_HOST/$1") 2>/dev/null; }

sy_python() {
  # Interpreter for probes: the kit's venv if present, else any python3.
  if [[ -x "$SY_VENV/bin/python" ]]; then
    printf '%s\n' "$SY_VENV/bin/python"
  else
    printf '%s\n' "${SWITCHYARD_PYTHON:-python3}"
  fi
}

sy_pidfile() { printf '%s\n' "$SY_RUN/$1.pid"; }
sy_logfile() { printf '%s\n' "$SY_LOGS/$1.log"; }

# Substring that must appear in the command line of a service's process; guards
# against acting on a recycled pid.
sy_cmd_marker() {
  case "$1" in
    kafka) printf '%s\n' "kafka.Kafka" ;;
    ferretdb) printf '%s\n' "ferretdb" ;;
    moto) printf '%s\n' "moto_server" ;;
    *) return 1 ;;
  esac
}

sy_port_of() {
  case "$1" in
    kafka) printf '%s\n' "$SY_KAFKA_PORT" ;;
    ferretdb) printf '%s\n' "$SY_MONGO_PORT" ;;
    moto) printf '%s\n' "$SY_MOTO_PORT" ;;
    *) return 1 ;;
  esac
}

# sy_alive PID -> the process exists and is not a zombie (a killed daemon
# lingers as a zombie until init reaps it).
sy_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$stat" && "$stat" != Z* ]]
}

# sy_pid SVC -> prints the pid and succeeds if SVC was started by this kit and
# its process is still alive.
sy_pid() {
  local pidfile pid args marker
  pidfile="$(sy_pidfile "$1")"
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  sy_alive "$pid" || return 1
  marker="$(sy_cmd_marker "$1")"
  args="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
  [[ "$args" == *"$marker"* ]] || return 1
  printf '%s\n' "$pid"
}

# sy_probe SVC -> succeeds when the service answers its protocol.
sy_probe() {
  local py
  py="$(sy_python)"
  case "$1" in
    kafka) "$py" "$SY_LOCAL_DIR/probe.py" kafka "$SY_HOST:$SY_KAFKA_PORT" ;;
    ferretdb) "$py" "$SY_LOCAL_DIR/probe.py" mongo "$SY_HOST:$SY_MONGO_PORT" ;;
    moto) "$py" "$SY_LOCAL_DIR/probe.py" http "http://$SY_HOST:$SY_MOTO_PORT/moto-api/" ;;
    *) return 1 ;;
  esac
}

# sy_launch SVC CMD... -> start CMD detached (own session, stdin closed, output
# to the service log), record its pid in the pid file.
sy_launch() {
  local svc="$1" pidfile log deadline
  shift
  pidfile="$(sy_pidfile "$svc")"
  log="$(sy_logfile "$svc")"
  mkdir -p "$SY_LOGS"
  [[ -f "$log" ]] && mv -f "$log" "$log.prev"
  rm -f "$pidfile"
  {
    printf '# %s started by deploy/local/up.sh at %s\n' "$svc" "$(date -u +%FT%TZ)"
    printf '# cmd:'
    printf ' %q' "$@"
    printf '\n'
  } >"$log"
  local -a detach=()
  command -v setsid >/dev/null 2>&1 && detach=(setsid)
  # The inner shell writes its own pid and then execs the service, so the pid
  # file names the service process itself (and, with setsid, its process group).
  # shellcheck disable=SC2016 # $$/$1/$@ belong to the inner shell
  "${detach[@]}" bash -c 'printf "%s\n" "$$" >"$1"; shift; exec "$@"' sy-launch \
    "$pidfile" "$@" </dev/null >>"$log" 2>&1 9>&- &
  deadline="$(sy_deadline_in 10)"
  while [[ ! -s "$pidfile" ]]; do
    sy_before_deadline "$deadline" || sy_die "$svc: launcher did not write $pidfile"
    sleep 0.05
  done
}

# sy_stop SVC TIMEOUT -> SIGTERM the service's process group, wait up to
# TIMEOUT seconds, then SIGKILL. Prints what happened; safe if not running.
sy_stop() {
  local svc="$1" timeout="$2" pid pidfile deadline port
  pidfile="$(sy_pidfile "$svc")"
  if ! pid="$(sy_pid "$svc")"; then
    rm -f "$pidfile"
    port="$(sy_port_of "$svc")"
    if sy_port_open "$port"; then
      sy_log "$svc: not started by this kit, but port $port is in use by another process; leaving it alone"
    else
      sy_log "$svc: not running"
    fi
    return 0
  fi
  local start
  start="$(sy_now)"
  sy_log "$svc: stopping pid $pid (SIGTERM)"
  # Signal the whole process group if the service leads one (setsid), so
  # helper children go too; fall back to the single pid.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  deadline="$(sy_deadline_in "$timeout")"
  while sy_alive "$pid"; do
    if ! sy_before_deadline "$deadline"; then
      sy_warn "$svc: still alive after ${timeout}s, sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      deadline="$(sy_deadline_in 10)"
      while sy_alive "$pid"; do
        sy_before_deadline "$deadline" || sy_die "$svc: pid $pid survived SIGKILL"
        sleep 0.1
      done
      break
    fi
    sleep 0.1
  done
  rm -f "$pidfile"
  sy_log "$svc: stopped in $(sy_since "$start")s"
}

sy_stop_timeout() {
  case "$1" in
    kafka) printf '%s\n' "${SWITCHYARD_KAFKA_STOP_TIMEOUT:-60}" ;;
    *) printf '%s\n' "${SWITCHYARD_STOP_TIMEOUT:-20}" ;;
  esac
}

sy_start_timeout() {
  case "$1" in
    kafka) printf '%s\n' "${SWITCHYARD_KAFKA_START_TIMEOUT:-180}" ;;
    *) printf '%s\n' "${SWITCHYARD_START_TIMEOUT:-90}" ;;
  esac
}

# ---------------------------------------------------------------------------
# Installs. Each sy_install_<svc> prints "cached" or what it did on stdout and
# logs details to $SY_LOGS/install-<what>.log.

# Runs CMD... with output to LOG; on failure shows the log tail and dies.
sy_run_logged() {
  local what="$1" log="$2"
  shift 2
  if ! "$@" >>"$log" 2>&1 9>&-; then
    sy_log_tail "$log" 60
    sy_die "$what failed (full log: $log)"
  fi
}

# Java system properties, read once per shell by sy_check_java.
SY_JAVA_PROPS=""

sy_check_java() {
  sy_require_cmd java
  [[ -n "$SY_JAVA_PROPS" ]] || SY_JAVA_PROPS="$(java -XshowSettings:properties -version 2>&1)"
  local v
  v="$(awk -F'= ' '/java.specification.version/ {print $2}' <<<"$SY_JAVA_PROPS")"
  [[ "${v%%.*}" =~ ^[0-9]+$ ]] || sy_die "could not determine the Java version (got '$v')"
  ((${v%%.*} >= 17)) || sy_die "Kafka $SY_KAFKA_VERSION needs Java 17+, found Java $v"
}

# JVM build id usable in file names ("17.0.15+6-Debian-1deb12u1" ->
# "17.0.15_6_Debian_1deb12u1"). Call sy_check_java first.
sy_java_build() {
  awk -F'= ' '/java.vm.version/ {print $2}' <<<"$SY_JAVA_PROPS" | tr -c 'A-Za-z0-9.\n' '_'
}

sy_install_kafka() {
  local pom="$SY_LOCAL_DIR/kafka/pom.xml" stamp want tmp log
  stamp="$SY_KAFKA_HOME/.installed"
  want="$SY_KAFKA_VERSION $(sy_sha256 "$pom")"
  if [[ -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then
    echo cached
    return 0
  fi
  sy_check_java
  sy_require_cmd mvn
  log="$SY_LOGS/install-kafka.log"
  : >"$log"
  sy_log "kafka: resolving Kafka $SY_KAFKA_VERSION jars from Maven Central (log: $log)"
  tmp="$SY_KAFKA_HOME.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # -f with a pom outside the build dir: dependency:copy-dependencies only
  # writes into -DoutputDirectory, so nothing lands in the repository.
  sy_run_logged "kafka: mvn dependency:copy-dependencies" "$log" \
    mvn -B -q -Dstyle.color=never -f "$pom" \
    -Dkafka.version="$SY_KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs"
  compgen -G "$tmp/libs/kafka_2.13-$SY_KAFKA_VERSION.jar" >/dev/null ||
    sy_die "kafka: kafka_2.13-$SY_KAFKA_VERSION.jar missing after mvn (see $log)"
  printf '%s\n' "$want" >"$tmp/.installed"
  rm -rf "$SY_KAFKA_HOME"
  mv "$tmp" "$SY_KAFKA_HOME"
  echo "installed $(find "$SY_KAFKA_HOME/libs" -name '*.jar' | wc -l | tr -d ' ') jars"
}

# Built with deploy/local/ferretdb-isolation.patch: upstream 1.24 does not isolate
# updates (it reads, changes the document in Go and writes it back by _id without a
# transaction), so concurrent updates of one document lose writes that MongoDB would keep;
# the patch serialises update, findAndModify and delete. docs/store.md has the details.
SY_FERRETDB_PATCH="$SY_LOCAL_DIR/ferretdb-isolation.patch"

# The ferretdb binary reports the expected version ("version: v1.24.2") and was built
# with the current patch (its hash in a stamp beside the binary).
# (Not `| grep -q`: with pipefail, grep exiting early can SIGPIPE the writer.)
sy_ferretdb_ok() {
  local out
  [[ -x "$SY_FERRETDB_BIN" && -f "$SY_FERRETDB_BIN.patch" ]] || return 1
  [[ "$(<"$SY_FERRETDB_BIN.patch")" == "$(sy_sha256 "$SY_FERRETDB_PATCH")" ]] || return 1
  out="$("$SY_FERRETDB_BIN" --version 2>/dev/null)" || return 1
  [[ $'\n'"$out"$'\n' == *$'\n'"version: $SY_FERRETDB_VERSION"$'\n'* ]]
}

sy_install_ferretdb() {
  if sy_ferretdb_ok; then
    echo cached
    return 0
  fi
  sy_require_cmd go
  local log src dir build
  log="$SY_LOGS/install-ferretdb.log"
  : >"$log"
  sy_log "ferretdb: building FerretDB $SY_FERRETDB_VERSION with $(go env GOVERSION) (log: $log)"
  # Plain `go install .../cmd/ferretdb@v1.24.2` builds a binary that panics at
  # start ("Invalid build/version/version.txt file content"): the release
  # process generates build/version/version.txt, which the module zip lacks.
  # So: fetch the module, copy it, add version.txt, build from the copy.
  dir="$(cd /tmp && go mod download -json "github.com/FerretDB/FerretDB@$SY_FERRETDB_VERSION" 2>>"$log" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -n "$dir" && -d "$dir" ]] || {
    sy_log_tail "$log"
    sy_die "ferretdb: go mod download failed"
  }
  build="$SY_HOME/ferretdb-$SY_FERRETDB_VERSION"
  src="$build/src.$$"
  rm -rf "$src"
  mkdir -p "$build/bin"
  cp -R "$dir" "$src"
  chmod -R u+w "$src"
  printf '%s\n' "$SY_FERRETDB_VERSION" >"$src/build/version/version.txt"
  (cd "$src" && sy_run_logged "ferretdb: patch" "$log" git apply -p1 "$SY_FERRETDB_PATCH")
  # CGO off: FerretDB's SQLite backend is pure Go (modernc.org/sqlite), so no C
  # toolchain is needed and the binary is static.
  (cd "$src" && sy_run_logged "ferretdb: go build" "$log" \
    env CGO_ENABLED=0 go build -buildvcs=false -o "$SY_FERRETDB_BIN.tmp" ./cmd/ferretdb)
  mv -f "$SY_FERRETDB_BIN.tmp" "$SY_FERRETDB_BIN"
  sy_sha256 "$SY_FERRETDB_PATCH" >"$SY_FERRETDB_BIN.patch"
  rm -rf "$src"
  sy_ferretdb_ok || sy_die "ferretdb: built binary does not report $SY_FERRETDB_VERSION"
  echo "built $SY_FERRETDB_VERSION (patched: isolated writes)"
}

# nasm, for libjpeg-turbo's SIMD in the vision crate's JPEG decoder (mozjpeg-sys). Only a build
# tool, but it must be on the PATH before mozjpeg-sys first builds: cargo caches the build
# script's result, and without nasm that is the plain-C decoder (2-2.6x slower, same pixels).
sy_install_nasm() {
  if command -v nasm >/dev/null 2>&1; then
    echo "present ($(nasm -v | awk '{print $3}'))"
    return 0
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    local log="$SY_LOGS/install-nasm.log"
    : >"$log"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q nasm >>"$log" 2>&1; then
      apt-get update -q >>"$log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q nasm >>"$log" 2>&1 || true
    fi
  fi
  if command -v nasm >/dev/null 2>&1; then
    echo "installed ($(nasm -v | awk '{print $3}'))"
  else
    sy_warn "nasm: not installed (needs root and apt-get); JPEG decoding builds without SIMD"
    echo "missing"
  fi
}

# Python venv shared by moto and ort.
sy_install_venv() {
  local req="$SY_LOCAL_DIR/requirements.txt" stamp want log py
  stamp="$SY_VENV/.switchyard-requirements"
  want="$(sy_sha256 "$req")"
  if [[ -x "$SY_VENV/bin/python" && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then
    echo cached
    return 0
  fi
  py="${SWITCHYARD_PYTHON:-python3}"
  sy_require_cmd "$py"
  log="$SY_LOGS/install-venv.log"
  : >"$log"
  if [[ ! -x "$SY_VENV/bin/python" ]]; then
    sy_log "venv: creating $SY_VENV with $("$py" --version 2>&1)"
    sy_run_logged "venv: python -m venv" "$log" "$py" -m venv "$SY_VENV"
  fi
  sy_log "venv: pip install -r deploy/local/requirements.txt (log: $log)"
  sy_run_logged "venv: pip install" "$log" \
    "$SY_VENV/bin/python" -m pip install --disable-pip-version-check -r "$req"
  printf '%s\n' "$want" >"$stamp"
  echo "installed $("$SY_VENV/bin/python" -m pip list --format=freeze 2>/dev/null |
    grep -iE '^(moto|onnxruntime)==' | tr '\n' ' ' | sed 's/ $//')"
}

# The generated YOLOv8n test model (tools/vision/make_yolov8n.py), rebuilt when the generator,
# the reference pipeline it calibrates with, or the venv's packages change.
SY_MODEL="$SY_HOME/models/yolov8n.onnx"
SY_SAMPLES="$SY_HOME/samples"
sy_install_model() {
  local root stamp want log
  root="$(cd "$SY_LOCAL_DIR/../.." && pwd)"
  stamp="$SY_MODEL.stamp"
  want="$(cat "$root/tools/vision/make_yolov8n.py" "$root/tools/vision/yolo_ref.py" \
    "$root/tools/vision/sample_images.py" "$SY_LOCAL_DIR/requirements.txt" |
    sha256sum | awk '{print $1}')"
  if [[ -f "$SY_MODEL" && -d "$SY_SAMPLES" && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then
    echo cached
    return 0
  fi
  mkdir -p "$(dirname "$SY_MODEL")"
  log="$SY_LOGS/install-model.log"
  : >"$log"
  sy_log "model: generating YOLOv8n (seeded weights, calibrated on scikit-image photos; ~2 min) (log: $log)"
  sy_run_logged "model: make_yolov8n.py" "$log" \
    "$SY_VENV/bin/python" "$root/tools/vision/make_yolov8n.py" --out "$SY_MODEL"
  # The photos `switchyard dev` feeds its vision jobs (scikit-image's, as the model saw them).
  rm -rf "$SY_SAMPLES"
  sy_run_logged "model: sample_images.py" "$log" \
    "$SY_VENV/bin/python" "$root/tools/vision/sample_images.py" "$SY_SAMPLES" --photos-only
  printf '%s\n' "$want" >"$stamp"
  echo "generated $SY_MODEL and the sample photos in $SY_SAMPLES"
}

# Path of libonnxruntime.so.<ver> inside the venv (empty if absent).
sy_ort_dylib() {
  find "$SY_VENV/lib" -path '*/site-packages/onnxruntime/capi/*' \
    -name 'libonnxruntime.so*' ! -name '*providers*' 2>/dev/null | sort | tail -n 1 || true
}

# ---------------------------------------------------------------------------
# Service launchers (called only when the service is not running).

sy_kafka_cp() { printf '%s\n' "$SY_KAFKA_HOME/libs/*"; }

# Run a Kafka CLI class with the cached jars: sy_kafka_tool CLASS ARGS...
sy_kafka_tool() {
  java "${SY_KAFKA_TOOL_JVM_OPTS[@]}" \
    -Dlog4j2.configurationFile="$SY_LOCAL_DIR/kafka/log4j2-tools.properties" \
    -cp "$(sy_kafka_cp)" "$@"
}

# Kafka cluster ids are 16 random bytes, base64url without padding. Kafka's own
# generator also avoids ids starting with '-' (they look like CLI flags).
sy_kafka_cluster_id() {
  local id=""
  while [[ -z "$id" || "$id" == -* ]]; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  printf '%s\n' "$id"
}

sy_kafka_write_config() {
  local dir="$SY_RUN/kafka"
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
# Generated by deploy/local/lib.sh on every start; edits are overwritten.
# Single-node KRaft: broker and controller in one process.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$SY_HOST:$SY_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$SY_HOST:$SY_KAFKA_PORT,CONTROLLER://$SY_HOST:$SY_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$SY_HOST:$SY_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data

# Test-friendly settings.
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Bounded disk: load tests write hundreds of MB a run to the same topics, and without a limit
# the log dir reached 15 GB within an hour of router-throughput runs (the router drained
# 35k-45k jobs/s against it, 52k-60k on a fresh log dir). Each partition keeps at most about
# 128 MiB, and nothing older than 6 hours.
log.retention.bytes=134217728
log.segment.bytes=33554432
log.retention.hours=6
log.retention.check.interval.ms=60000
EOF
}

sy_start_kafka() {
  local dir="$SY_RUN/kafka" log
  sy_check_java
  sy_kafka_write_config
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    log="$(sy_logfile kafka-format)"
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    sy_run_logged "kafka: storage format" "$log" \
      sy_kafka_tool kafka.tools.StorageTool format --standalone \
      -t "$(sy_kafka_cluster_id)" -c "$dir/server.properties"
  fi
  local -a extra=()
  # AppCDS: the first start dumps the classes the broker loaded into an archive
  # when it exits (down.sh); later starts map it, which cuts broker start-up
  # from ~5s to ~2s on a 2-core box. A stale/mismatched archive is ignored by
  # the JVM (-Xshare:auto). Reinstalling Kafka deletes it. Opt out with
  # SWITCHYARD_KAFKA_CDS=0.
  if [[ "${SWITCHYARD_KAFKA_CDS:-1}" != 0 ]]; then
    local jsa
    jsa="$SY_KAFKA_HOME/broker-$(sy_java_build).jsa"
    if [[ -s "$jsa" ]]; then
      extra+=("-XX:SharedArchiveFile=$jsa")
    else
      rm -f "$jsa"
      extra+=("-XX:ArchiveClassesAtExit=$jsa")
    fi
  fi
  # shellcheck disable=SC2206 # word splitting of user JVM flags is intended
  [[ -n "${SWITCHYARD_KAFKA_JVM_OPTS:-}" ]] && extra+=(${SWITCHYARD_KAFKA_JVM_OPTS})
  sy_launch kafka java "${SY_KAFKA_BROKER_JVM_OPTS[@]}" "${extra[@]}" \
    -Dlog4j2.configurationFile="$SY_LOCAL_DIR/kafka/log4j2-server.properties" \
    -cp "$(sy_kafka_cp)" kafka.Kafka "$dir/server.properties"
}

sy_start_ferretdb() {
  local dir="$SY_RUN/ferretdb"
  mkdir -p "$dir/data" "$dir/state"
  sy_launch ferretdb "$SY_FERRETDB_BIN" \
    --handler=sqlite --sqlite-url="file:$dir/data/" --state-dir="$dir/state" \
    --listen-addr="$SY_HOST:$SY_MONGO_PORT" --debug-addr=- --telemetry=disable \
    --log-level=info
}

sy_start_moto() {
  sy_launch moto "$SY_VENV/bin/moto_server" -H "$SY_HOST" -p "$SY_MOTO_PORT"
}
