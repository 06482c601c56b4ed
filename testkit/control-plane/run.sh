#!/usr/bin/env bash
# A genuine Kubernetes control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager, built from their Go modules (testkit/control-plane/<version>/go.mod).
#
#   testkit/control-plane/run.sh [--version v1.37] -- COMMAND ARGS...
#       starts it, runs COMMAND with KUBECONFIG and NAVIGATOR_TEST_KUBECONFIG set to its admin
#       kubeconfig, stops it and exits with COMMAND's status
#   testkit/control-plane/run.sh [--version v1.37]
#       starts it and waits for Ctrl-C (prints how to use it)
#   testkit/control-plane/run.sh --build-only [--version v1.37]
#   testkit/control-plane/run.sh --kubectl [--version v1.37]
#       builds kubectl too (for machines without one) and prints the directory that holds it
#
# Free ports, a throwaway PKI (CA, serving certificate, an admin client certificate in
# system:masters, service-account signing keys), RBAC, the default admission plugins
# (NamespaceLifecycle, ResourceQuota, ServiceAccount, ...), and the controller manager with
# --use-service-account-credentials so that garbage collection and namespace deletion work.
# Everything lives in a temporary directory; every process is stopped on exit, on Ctrl-C and
# when COMMAND fails. Binaries are built once into target/control-plane/<version>/ and rebuilt
# only when go.mod or go.sum change. No kubelet runs: pods never start.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
version=v1.37
build_only=false
kubectl=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --build-only) build_only=true; shift ;;
    --kubectl) kubectl=true; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [--version vX.Y] [--build-only | --kubectl] [-- COMMAND ARGS...]" >&2; exit 2 ;;
  esac
done

module="$here/$version"
[[ -f "$module/go.mod" ]] || { echo "no control plane module $module" >&2; exit 2; }
bin="$root/target/control-plane/$version"
stamp="$(cat "$module/go.mod" "$module/go.sum" "$module/etcd/main.go" "$0" | sha256sum | cut -c1-16)"

# go build PACKAGES... into $bin, with the version the binaries report set at link time.
go_build() {
  command -v go >/dev/null || { echo "Go is needed to build the control plane (go.dev/dl, or apt-get install golang)" >&2; exit 1; }
  mkdir -p "$bin"
  # The version the binaries report (/version, and the API's compatibility version) is set at
  # link time, as Kubernetes' own build does; the build date is fixed so builds are repeatable.
  local release
  release="$(cd "$module" && GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' k8s.io/kubernetes)"
  local major="${release#v}"; major="${major%%.*}"
  local minor="${release#v*.}"; minor="${minor%%.*}"
  local ldflags="-s"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # -mod=readonly: go.sum pins every module; nothing is resolved anew.
  (cd "$module" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags="$ldflags" -o "$bin/" "$@")
}

build() {
  # One build per version at a time: CI starts the builds early in the background, and a later
  # call waits for that build here instead of starting a second one.
  mkdir -p "$bin"
  exec {lock}>"$bin.lock"
  flock "$lock"
  if [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$stamp" ]]; then
    flock -u "$lock"
    return
  fi
  echo "==> building kube-apiserver, kube-controller-manager and etcd ($version) into $bin" >&2
  local started=$SECONDS
  go_build k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager ./etcd
  rm -f "$bin/kubectl"
  echo "$stamp" > "$bin/.stamp"
  flock -u "$lock"
  echo "==> built in $((SECONDS - started)) s" >&2
}

build
$build_only && exit 0
if $kubectl; then
  [[ -x "$bin/kubectl" ]] || { echo "==> building kubectl ($version) into $bin" >&2; go_build k8s.io/kubernetes/cmd/kubectl; }
  echo "$bin"
  exit 0
fi

dir="$(mktemp -d -t nvt-control-plane.XXXXXX)"
pids=()
stop() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # A failure shows the servers' last words; Ctrl-C (130) is a normal stop.
  if [[ $status -ne 0 && $status -ne 130 ]]; then
    for log in "$dir"/*.log; do
      [[ -f "$log" ]] && { echo "--- last lines of $(basename "$log")" >&2; tail -n 15 "$log" >&2; }
    done
  fi
  rm -rf "$dir"
  exit "$status"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- PKI ---------------------------------------------------------------------------------------
pki="$dir/pki"
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=navigator-test-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  sign() { # name subject extensions
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  }
  sign serving "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign admin "/O=system:masters/CN=navigator-test-admin" "extendedKeyUsage=clientAuth"
  sign controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
server="https://127.0.0.1:$api_port"

kubeconfig() { # file user
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: local
  context: {cluster: local, user: $2, namespace: default}
current-context: local
EOF
}
kubeconfig "$dir/kubeconfig" admin
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager

# --- processes ---------------------------------------------------------------------------------
"$bin/etcd" --name default --data-dir "$dir/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --log-level warn > "$dir/etcd.log" 2>&1 &
pids+=($!)

"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range 10.96.0.0/24 \
  --authorization-mode RBAC --enable-admission-plugins NamespaceLifecycle,ResourceQuota,ServiceAccount \
  --endpoint-reconciler-type none --allow-privileged --v 1 > "$dir/kube-apiserver.log" 2>&1 &
pids+=($!)
# (No endpoint reconciler: it refuses a loopback address for the `kubernetes` Service, and no
# pod ever reaches the API server through that Service here.)

ready() {
  curl -fsS --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server/readyz" >/dev/null 2>&1
}
alive() { kill -0 "$1" 2>/dev/null || { echo "$2 exited; see its log above" >&2; exit 1; }; }
for _ in $(seq 600); do ready && break; alive "${pids[1]}" kube-apiserver; sleep 0.1; done
ready || { echo "kube-apiserver did not become ready within 60 s" >&2; exit 1; }

"$bin/kube-controller-manager" --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
  --use-service-account-credentials=true --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" --controllers '*' --v 1 > "$dir/kube-controller-manager.log" 2>&1 &
pids+=($!)

# The default ServiceAccount appears once the controller manager's token controller runs.
for _ in $(seq 600); do
  kubectl --kubeconfig "$dir/kubeconfig" -n default get serviceaccount default >/dev/null 2>&1 && break
  alive "${pids[2]}" kube-controller-manager
  sleep 0.1
done
kubectl --kubeconfig "$dir/kubeconfig" -n default get serviceaccount default >/dev/null 2>&1 \
  || { echo "kube-controller-manager did not start within 60 s" >&2; exit 1; }

server_version="$(kubectl --kubeconfig "$dir/kubeconfig" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
echo "==> control plane $server_version ready at $server (kubeconfig $dir/kubeconfig)" >&2

export KUBECONFIG="$dir/kubeconfig" NAVIGATOR_TEST_KUBECONFIG="$dir/kubeconfig"
if [[ $# -gt 0 ]]; then
  "$@"
else
  echo "    export KUBECONFIG=$dir/kubeconfig   # in another terminal; Ctrl-C here stops it" >&2
  while true; do sleep 3600; done
fi
