#!/usr/bin/env bash
# Build the OpenTelemetry Collector (collectors/otelcol) and Jaeger v2 (collectors/jaeger) into the cache.
#
#   collectors/build.sh            # prints the collector's path, then Jaeger's
#   collectors/build.sh --images   # and builds the local images docker/compose.yaml runs
#
# Binaries go to ${SELFOPT_TRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/selfopt-trace}/bin/ as
# NAME-<hash of go version, flags, go.mod, go.sum, *.go>, with a NAME symlink to the current one; a
# binary already there is not built again. Needs Go >= 1.26 and the Go module proxy (first build:
# several minutes on 2 cores).
set -euo pipefail
shopt -s nullglob inherit_errexit
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SELFOPT_TRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/selfopt-trace}/bin
command -v go >/dev/null || { echo "collectors/build.sh: go is not on PATH (Go >= 1.26 builds the collector and Jaeger)" >&2; exit 1; }
mkdir -p "$bin"
flags=(-trimpath -buildvcs=false "-ldflags=-s -w")
export CGO_ENABLED=0  # static: runs in any image, scratch included

# Two test sessions may build at once: one builds, the other waits and reuses.
exec 9>"$bin/.build.lock"
flock 9

build() {  # NAME MODULE_DIR PACKAGE
  local name=$1 dir=$here/$2 package=$3 key out
  key=$({ go version; echo "${flags[*]} CGO_ENABLED=$CGO_ENABLED"; cat "$dir"/go.mod "$dir"/go.sum "$dir"/*.go; } | sha256sum | cut -c1-16)
  out=$bin/$name-$key
  if [[ ! -x $out ]]; then
    echo "collectors/build.sh: building $name ($2) ..." >&2
    local start=$SECONDS
    (cd "$dir" && go build "${flags[@]}" -o "$out.tmp" "$package")
    mv -f "$out.tmp" "$out"
    echo "collectors/build.sh: $name built in $((SECONDS - start)) s" >&2
    for old in "$bin/$name"-*; do [[ $old == "$out" ]] || rm -f "$old"; done
  fi
  ln -sfn "$(basename "$out")" "$bin/$name"
  echo "$out"
}

otelcol=$(build otelcol otelcol .)
jaeger=$(build jaeger jaeger github.com/jaegertracing/jaeger/cmd/jaeger)
echo "$otelcol"
echo "$jaeger"

image() {  # BINARY NAME TAG: docker/Dockerfile.NAME with only the binary as context (cached by docker)
  local context=$bin/.context-$2
  rm -rf "$context" && mkdir "$context"
  ln "$1" "$context/$2" 2>/dev/null || cp "$1" "$context/$2"
  docker build -q -f "$here/../docker/Dockerfile.$2" -t "$3" "$context" >&2
  rm -rf "$context"
}
if [[ ${1:-} == --images ]]; then
  image "$otelcol" otelcol selfopt-trace/otelcol:0.161.0
  image "$jaeger" jaeger selfopt-trace/jaeger:2.12.0
fi
