#!/usr/bin/env bash
# Helm for CI, built from its Go module (helm.sh/helm/v4, pinned with every dependency in
# testkit/helm/go.mod and go.sum), as testkit/control-plane/ builds the control plane.
#
#   testkit/helm/build.sh        builds target/helm/<version>/helm once and prints its path
#
# Rebuilt only when go.mod, go.sum or this script change; -mod=readonly resolves nothing anew.
# The first build takes about 6 minutes on 2 cores (less after the control plane's, whose
# k8s.io modules it shares in Go's build cache), a rebuild-free run well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
command -v go >/dev/null || { echo "Go is needed to build helm (go.dev/dl, or apt-get install golang)" >&2; exit 1; }

version="$(cd "$here" && GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' helm.sh/helm/v4)"
bin="$root/target/helm/$version"
stamp="$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)"

# One build at a time (CI starts it early in the background; a later call waits for it here).
mkdir -p "$bin"
exec {lock}>"$bin.lock"
flock "$lock"
if [[ ! -x "$bin/helm" || "$(cat "$bin/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "==> building helm $version into $bin" >&2
  started=$SECONDS
  mkdir -p "$bin"
  rm -f "$bin/.stamp"
  # The version `helm version` reports is set at link time, as Helm's own Makefile does.
  ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version"
  ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  (cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -ldflags="$ldflags" -o "$bin/helm" helm.sh/helm/v4/cmd/helm)
  echo "$stamp" > "$bin/.stamp"
  echo "==> built helm in $((SECONDS - started)) s" >&2
fi
echo "$bin/helm"
