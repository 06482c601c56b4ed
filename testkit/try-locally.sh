#!/usr/bin/env bash
# Try the whole loop without a cluster or a VMware account: a local control plane (etcd,
# kube-apiserver, kube-controller-manager built from their Go modules), the token endpoint
# stand-in, the operator, and an example NavigatorToken whose Secret you watch being written
# and refreshed (tokens live 2 minutes here). Ctrl-C stops everything.
#
#   testkit/try-locally.sh
#
# The first run builds the control plane (about 10 minutes on 2 cores) and the operator.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ "${1:-}" != --inside ]]; then
  echo "==> building the operator and the token endpoint stand-in" >&2
  cargo build --quiet --bin navigator-token-operator
  cargo build --quiet -p testkit --bin token-endpoint
  exec testkit/control-plane/run.sh -- "$0" --inside
fi

# Inside: KUBECONFIG points at the local control plane (run.sh stops it when this exits).
work="$(mktemp -d -t nvt-try.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

target/debug/token-endpoint 120 > "$work/endpoint" 2> "$work/endpoint.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$work/endpoint" ]] && break; sleep 0.1; done
endpoint="$(head -n1 "$work/endpoint")"
echo "==> token endpoint stand-in at $endpoint" >&2

kubectl create namespace team-a >/dev/null
kubectl -n team-a create secret generic partner-oauth-client \
  --from-literal=client_id=testkit-client --from-literal=client_secret=testkit-secret >/dev/null
kubectl -n team-a label secret partner-oauth-client navigator.dev/credentials=true >/dev/null

target/debug/navigator-token-operator run --install-crd --allowed-endpoint-hosts 127.0.0.1 \
  --admin-addr 127.0.0.1:0 --cluster-credentials-namespace team-a > "$work/operator.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
  kubectl get crd navigatortokens.navigator.dev >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl wait --for=condition=Established crd/navigatortokens.navigator.dev --timeout=60s >/dev/null
echo "==> operator running (its log: $work/operator.log)" >&2

kubectl apply -f - <<EOF
apiVersion: navigator.dev/v1alpha1
kind: NavigatorToken
metadata:
  name: partner-api
  namespace: team-a
spec:
  orgId: 6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4
  credentialsSecretRef:
    name: partner-oauth-client
  endpoint:
    type: CSP
    url: $endpoint
  validity: 2m
  refreshBefore: 1m
  target:
    secretName: partner-api-token
EOF
echo "==> every 15 s: the NavigatorToken, and the Secret's issue and expiry times (Ctrl-C stops)" >&2
while true; do
  kubectl -n team-a get nvt partner-api
  kubectl -n team-a get secret partner-api-token \
    -o jsonpath='{"  Secret partner-api-token: issued "}{.metadata.annotations.navigator\.dev/issued-at}{", expires "}{.metadata.annotations.navigator\.dev/expires-at}{"\n"}' 2>/dev/null \
    || echo "  Secret partner-api-token: not written yet"
  sleep 15
done
