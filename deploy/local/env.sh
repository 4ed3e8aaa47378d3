# shellcheck shell=bash
# Connection settings for the services started by deploy/local/up.sh.
#
#   source deploy/local/env.sh          # bash/zsh: export into this shell
#   deploy/local/env.sh >>"$GITHUB_ENV" # run it: prints KEY=VALUE lines
#
# Safe to source: changes no shell options, never exits, defines no functions.
# Endpoints and the region keep values you already exported (e.g. another
# port); the AWS credentials are always the dummy "testing" pair so a real
# key in your shell can never be sent anywhere by the tests.
# SWITCHYARD_TEST_SERVICES is deliberately not set here; CI sets it.

_sy_home="${SWITCHYARD_LOCAL_HOME:-${HOME:-}/.cache/switchyard-local}"

: "${SWITCHYARD_KAFKA_BROKERS:=127.0.0.1:9092}"
: "${SWITCHYARD_MONGO_URI:=mongodb://127.0.0.1:27017/}"
: "${AWS_ENDPOINT_URL:=http://127.0.0.1:4566}"
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
: "${AWS_REGION:=us-east-1}"
: "${AWS_DEFAULT_REGION:=$AWS_REGION}"
: "${SWITCHYARD_VENV:=$_sy_home/venv}"
export SWITCHYARD_KAFKA_BROKERS SWITCHYARD_MONGO_URI AWS_ENDPOINT_URL \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION SWITCHYARD_VENV

# libonnxruntime.so.<ver> from the onnxruntime wheel in the venv (the `ort`
# crate's load-dynamic feature reads ORT_DYLIB_PATH). Only set when found, and
# a pre-set path that exists wins.
if [ -z "${ORT_DYLIB_PATH:-}" ] || [ ! -f "${ORT_DYLIB_PATH:-}" ]; then
  _sy_ort="$(find "$SWITCHYARD_VENV/lib" -path '*/site-packages/onnxruntime/capi/*' \
    -name 'libonnxruntime.so*' ! -name '*providers*' 2>/dev/null | sort | tail -n 1 || :)"
  if [ -n "$_sy_ort" ]; then
    ORT_DYLIB_PATH="$_sy_ort"
    export ORT_DYLIB_PATH
  fi
  unset _sy_ort
fi
# The generated YOLOv8n model (up.sh ort makes it), for `switchyard detect` and the tests.
if [ -z "${SWITCHYARD_YOLO_MODEL:-}" ] && [ -f "$_sy_home/models/yolov8n.onnx" ]; then
  SWITCHYARD_YOLO_MODEL="$_sy_home/models/yolov8n.onnx"
  export SWITCHYARD_YOLO_MODEL
fi
unset _sy_home

# Executed rather than sourced: print the settings as KEY=VALUE lines.
_sy_sourced=1
if [ -n "${BASH_VERSION:-}" ]; then
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then _sy_sourced=0; fi
elif [ -n "${ZSH_EVAL_CONTEXT:-}" ]; then
  case "$ZSH_EVAL_CONTEXT" in *:file*) ;; *) _sy_sourced=0 ;; esac
fi
if [ "$_sy_sourced" = 0 ]; then
  for _sy_var in SWITCHYARD_KAFKA_BROKERS SWITCHYARD_MONGO_URI AWS_ENDPOINT_URL \
    AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION \
    SWITCHYARD_VENV ORT_DYLIB_PATH SWITCHYARD_YOLO_MODEL; do
    eval "_sy_val=\${$_sy_var:-}"
    # shellcheck disable=SC2154 # assigned by the eval above
    if [ -n "$_sy_val" ]; then printf '%s=%s\n' "$_sy_var" "$_sy_val"; fi
  done
  unset _sy_var _sy_val
fi
unset _sy_sourced
