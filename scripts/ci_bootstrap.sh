#!/usr/bin/env bash
# Installs the few system tools CI jobs need that python:3.11-slim lacks (make for every job,
# git for `make security`/`make images`, curl for the Pulumi CLI and buildx downloads).
# A no-op where they already exist: laptops, shell runners, gitlab-ci-local's shell executor.
set -euo pipefail
missing=()
for tool in make git curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
fi
