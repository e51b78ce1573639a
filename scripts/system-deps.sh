#!/usr/bin/env bash
# Install the system tools some tests need, when missing (Debian/Ubuntu, as root).
#   rsync + gitlab-ci-local  validate and run the GitLab pipeline locally
#   prometheus (promtool)    check and unit-test the alerting rules
#   chromium                 render the status page headless
# The Pub/Sub emulator comes with the Google Cloud CLI (`gcloud components install pubsub-emulator`
# or Debian's google-cloud-cli-pubsub-emulator) and Java 17.
# Outside CI the tests that need a missing tool skip with a hint; under CI=true they fail.
set -euo pipefail

need_apt=()
command -v rsync >/dev/null || need_apt+=(rsync)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v wrk >/dev/null || need_apt+=(wrk)  # bench/api.py (Debian package wrk)

if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "system-deps: please install: ${need_apt[*]}" >&2
    exit 1
  fi
  echo "system-deps: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps prometheus from pulling its web UI and exporters.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

GCL_VERSION=4.60.1
if ! command -v gitlab-ci-local >/dev/null || [[ $(gitlab-ci-local --version 2>/dev/null) != "$GCL_VERSION" ]]; then
  if command -v npm >/dev/null; then
    echo "system-deps: npm install -g gitlab-ci-local@$GCL_VERSION" >&2
    npm install -g --silent --no-fund --no-audit "gitlab-ci-local@$GCL_VERSION" >/dev/null
  else
    echo "system-deps: npm is missing; gitlab-ci-local tests will skip" >&2
  fi
fi
