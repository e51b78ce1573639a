# shellcheck shell=bash
# Source me: `source scripts/ci_builder.sh`.
# Registers the job's BuildKit service ($BUILDKIT_HOST, e.g. tcp://buildkitd:1234) as a buildx
# builder with the `remote` driver and exports BUILDX_BUILDER, the builder name the Pulumi
# program hands to docker_build.Image(builder=...). Only the buildx client is installed: no
# Docker engine, no Docker socket (see the comment on `.pulumi` in .gitlab-ci.yml).
: "${BUILDKIT_HOST:?set BUILDKIT_HOST, e.g. tcp://buildkitd:1234}"
BUILDX_VERSION="${BUILDX_VERSION:-v0.30.1}"
_plugins="${HOME}/.docker/cli-plugins"
if ! [ -x "${_plugins}/docker-buildx" ]; then
  mkdir -p "$_plugins"
  _rel="https://github.com/docker/buildx/releases/download/${BUILDX_VERSION}"
  _bin="buildx-${BUILDX_VERSION}.linux-amd64"
  curl -fsSL -o "${_plugins}/${_bin}" "${_rel}/${_bin}"
  curl -fsSL -o "${_plugins}/checksums.txt" "${_rel}/checksums.txt"
  (cd "$_plugins" && grep " \*\?${_bin}\$" checksums.txt | sha256sum -c -) || return 1
  mv "${_plugins}/${_bin}" "${_plugins}/docker-buildx"
  chmod 0755 "${_plugins}/docker-buildx"
fi
export BUILDX_BUILDER="flightpipe-ci"
"${_plugins}/docker-buildx" rm "$BUILDX_BUILDER" >/dev/null 2>&1 || true
"${_plugins}/docker-buildx" create --name "$BUILDX_BUILDER" --driver remote "$BUILDKIT_HOST"
"${_plugins}/docker-buildx" inspect --bootstrap "$BUILDX_BUILDER"
unset _plugins _rel _bin
