#!/usr/bin/env bash
# The documented install path, and a server-side dry run of every example and every deploy/
# rendering, against a genuine
# kube-apiserver: what `kubectl apply` would do on a real cluster, admission and schema
# validation (CRDs, CEL rules) included. Run under the local control plane:
#
#   testkit/control-plane/run.sh -- bash .ci/dry-run-manifests.sh
#
# Needs the renderings of .ci/validate-manifests.sh in target/manifests/. The CRDs are
# installed for real (a dry run of a NavigatorToken needs its CRD established), and so are
# the namespaces the objects name; nothing else is created. Objects of the Prometheus
# Operator (ServiceMonitor, PrometheusRule) are left out: their CRDs are not this project's,
# and .ci/validate_monitoring.mjs checks them against their schemas.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -n "${KUBECONFIG:-}" ]] || { echo "KUBECONFIG is not set: run under testkit/control-plane/run.sh" >&2; exit 2; }
shopt -s nullglob
# PyYAML from the venv .ci/validate-manifests.sh installs.
python=target/ci-venv/bin/python
[[ -x $python ]] || { echo "no $python: run .ci/validate-manifests.sh first" >&2; exit 2; }

# The documented path from the Quick start to production: `run --install-crd` applied the CRDs
# (server-side, as the operator's field manager), then `kubectl apply --server-side -k deploy/`
# installs the rest. It must go through without a conflict or a warning.
if ! out="$(kubectl apply --server-side --field-manager=navigator-token-operator --force-conflicts \
  -f crds/navigatortoken.yaml -f crds/clusternavigatortoken.yaml 2>&1 >/dev/null)" || [[ -n "$out" ]]; then
  echo "FAIL: applying the CRDs:" >&2
  echo "$out" >&2
  exit 1
fi
kubectl wait --for=condition=Established --timeout=60s \
  crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev >/dev/null
if ! out="$(kubectl apply --server-side -k deploy/ 2>&1 >/dev/null)" || [[ -n "$out" ]]; then
  echo "FAIL: kubectl apply --server-side -k deploy/ after run --install-crd:" >&2
  echo "$out" >&2
  exit 1
fi
echo "kubectl apply --server-side -k deploy/ after run --install-crd: clean"

files=(examples/*.yaml examples/sharding/*/*.yaml target/manifests/*.yaml)
[[ ${#files[@]} -gt 3 ]] || { echo "no renderings in target/manifests/: run .ci/validate-manifests.sh first" >&2; exit 2; }
# Only the objects this project owns: drop the Prometheus Operator's kinds, and kustomizations.
filtered="$(mktemp -d)"
trap 'rm -rf "$filtered"' EXIT
for file in "${files[@]}"; do
  "$python" - "$file" "$filtered/$(echo "$file" | tr / _)" <<'EOF'
import sys, yaml
source, target = sys.argv[1], sys.argv[2]
with open(source) as f:
    docs = [d for d in yaml.safe_load_all(f) if d and "kind" in d and "apiVersion" in d]
keep = [d for d in docs if not d["apiVersion"].startswith(("monitoring.coreos.com/", "kustomize.config.k8s.io/"))]
with open(target, "w") as f:
    yaml.safe_dump_all(keep, f)
EOF
done
# The namespaces the objects live in (created for real, as an admin would first).
for namespace in $(cat "$filtered"/* | "$python" -c '
import sys, yaml
names = set()
for d in yaml.safe_load_all(sys.stdin):
    if d and d.get("metadata", {}).get("namespace"):
        names.add(d["metadata"]["namespace"])
print("\n".join(sorted(names)))'); do
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
done

failed=0
checked=0
for file in "$filtered"/*; do
  [[ -s "$file" && "$(cat "$file")" != "[]" ]] || continue
  checked=$((checked + 1))
  # --force-conflicts: the renderings differ from what was installed above (components); this
  # checks what the server accepts, not who owns which field.
  if ! out="$(kubectl apply --server-side --dry-run=server --force-conflicts --field-manager=ci-dry-run -f "$file" 2>&1)"; then
    echo "FAIL $(basename "$file"):" >&2
    echo "$out" >&2
    failed=$((failed + 1))
  fi
done
echo "server-side dry run: $checked files, $failed failed"
[[ $failed -eq 0 ]]
