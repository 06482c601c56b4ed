#!/usr/bin/env bash
# The Helm chart (deploy/helm/navigator-token-operator/) against a genuine kube-apiserver:
#
#   testkit/control-plane/run.sh --version v1.37 -- bash .ci/helm.sh
#
# 1. builds helm from its pinned Go module (testkit/helm/build.sh, cached in target/helm/);
# 2. .ci/helm_checks.py: the chart renders what deploy/ renders (drift, with its self-test),
#    shared files, versions, the values table of the docs;
# 3. helm lint --strict, helm package (named after the crate's version), values the schema
#    must reject (each failing with the key named);
# 4. a matrix of value sets, each rendered twice (byte-identical) and dry-run server-side;
# 5. helm install, upgrade (a changed value), a second upgrade that changes nothing, and
#    uninstall (CRDs kept), checking the objects and the ServiceAccount's RBAC after each; the
#    operator binary, run out of cluster with the chart's ServiceAccount token and the
#    Deployment's environment, writes a NavigatorToken's Secret (and a ClusterNavigatorToken's)
#    through the token endpoint stand-in; the same for a namespaced release; a release with
#    crds.keep=false takes the kept CRDs over and deletes them on uninstall.
#
# No kubelet runs, so the Deployment's pods are created (and admitted by Pod Security
# "restricted") but never start. Ends with `helm checks: N passed, M failed`; exit status 1 on
# any failure. Nothing secret is printed: tokens go only into files under a private
# temporary directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS
[[ -n "${KUBECONFIG:-}" ]] || { echo "KUBECONFIG is not set: run under testkit/control-plane/run.sh" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "kubectl not found on PATH" >&2; exit 2; }
command -v go >/dev/null || { echo "SKIPPED: helm checks (no Go toolchain on PATH to build helm)"; exit 2; }

chart=deploy/helm/navigator-token-operator
ns=navigator-token-operator       # the release namespace of the cluster-wide release
release=navigator-token-operator
sa="system:serviceaccount:$ns:navigator-token-operator"
crate_version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["version"])')

umask 077
work="$(mktemp -d -t nvt-helm.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# Helm's own state (repositories, cache, plugins) stays out of the user's home.
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds; shows its output when not.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what"; printf '%s\n' "$out" | head -n 25 | sed 's/^/     /'; fi
}
# equal DESCRIPTION WANT GOT
equal() {
  if [[ "$2" == "$3" ]]; then pass "$1"; else fail "$1"; echo "     want: $2"; echo "     got:  $3"; fi
}
# eventually SECONDS COMMAND...: COMMAND succeeds within SECONDS.
eventually() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { "$@"; return 1; }
    sleep 0.5
  done
}
step() { printf '==> %s (%d s)\n' "$*" "$((SECONDS - started))"; }

# --- 1. helm ---------------------------------------------------------------------------------
step "helm from its Go module"
build_started=$SECONDS
helm=$(testkit/helm/build.sh)
build_took=$((SECONDS - build_started))
echo "helm $("$helm" version --short) ($build_took s to build or find)"

# --- 2. offline: drift against deploy/, shared files, versions, docs ----------------------------
step "the chart against deploy/ (.ci/helm_checks.py)"
if out=$(python3 .ci/helm_checks.py --helm "$helm" 2>&1); then status=0; else status=$?; fi
printf '%s\n' "$out"
if counts=$(printf '%s\n' "$out" | sed -n 's/^helm_checks.py: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p') && [[ -n $counts ]]; then
  read -r p f <<<"$counts"
  passed=$((passed + p)) failed=$((failed + f))
  ((status == 0 || f > 0)) || fail ".ci/helm_checks.py exited with $status"
else
  fail ".ci/helm_checks.py ended without its count line (exit status $status)"
fi

# --- 3. lint, package, schema ----------------------------------------------------------------
step "lint, package and schema"
check "helm lint --strict $chart" "$helm" lint --strict "$chart"
mkdir -p "$work/package"
check "helm package $chart" "$helm" package "$chart" --destination "$work/package"
package="$work/package/navigator-token-operator-$crate_version.tgz"
check "the package is named after the crate's version ($crate_version)" test -f "$package"
if [[ -f $package ]]; then
  check "helm lint --strict on the package" "$helm" lint --strict "$package"
  check "the package renders what the directory renders" \
    cmp <("$helm" template "$release" "$package" -n "$ns") <("$helm" template "$release" "$chart" -n "$ns")
fi

# rejected DESCRIPTION WANTED-IN-MESSAGE HELM-ARGS...: helm template fails, naming the key.
rejected() {
  local what=$1 want=$2 out
  shift 2
  if out=$("$helm" template "$release" "$chart" -n "$ns" "$@" 2>&1); then
    fail "schema rejects $what: it rendered"
  elif [[ $out != *"$want"* ]]; then
    fail "schema rejects $what: the message does not name $want"
    printf '%s\n' "$out" | head -n 10 | sed 's/^/     /'
  else
    pass "schema rejects $what ($(printf '%s' "$out" | grep -F -m1 -- "$want" | sed 's/^[- ]*//'))"
  fi
}
rejected "an unknown key (replicas)" "'replicas'" --set replicas=3
rejected "an unknown nested key (image.tags)" "'tags'" --set image.tags=1.0
rejected "an unknown key in a Kubernetes type (containerSecurityContext.runAsUsr)" "'runAsUsr'" \
  --set containerSecurityContext.runAsUsr=1000
rejected "an unknown key in affinity (affinity.podAntiAffinity.preferred)" "'preferred'" \
  --set-json 'affinity={"podAntiAffinity":{"preferred":[]}}'
rejected "a string for an integer (replicaCount)" "/replicaCount" --set-string replicaCount=two
rejected "a string for a boolean (crds.enabled)" "/crds/enabled" --set-string crds.enabled=yes
rejected "a wrong enum value (installMode=namespaced)" "/installMode" --set installMode=namespaced
rejected "Namespaced mode without watchNamespaces" "/watchNamespaces" --set installMode=Namespaced
rejected "watchNamespaces in ClusterWide mode" "/watchNamespaces" --set 'watchNamespaces={team-a}'
rejected "two replicas without leader election" "/replicaCount" --set leaderElection.enabled=false
rejected "a port out of range (adminPort)" "/adminPort" --set adminPort=70000
rejected "an invalid quantity (resources.requests.cpu)" "/resources/requests/cpu" --set resources.requests.cpu=lots
rejected "an image tag for a digest (image.digest)" "/image/digest" --set image.digest=latest
rejected "a proxy URL with a password (proxy.httpsProxy)" "/proxy/httpsProxy" \
  --set proxy.httpsProxy=http://user:example@proxy.example:3128
rejected "a label the chart sets itself (commonLabels)" "/commonLabels" \
  --set-string 'commonLabels.app\.kubernetes\.io/name=other'
rejected "a label key Kubernetes refuses (nodeSelector)" "'bad key'" --set-string 'nodeSelector.bad key=linux'
rejected "a map for a list (tolerations)" "/tolerations" --set-json 'tolerations={"key":"dedicated"}'
if out=$("$helm" install rejected "$chart" -n "$ns" --set replicaCount=two 2>&1); then
  fail "helm install rejects a wrong type before touching the cluster: it installed"
else
  check "helm install rejects a wrong type (replicaCount) before touching the cluster" \
    bash -c '[[ $1 == *"/replicaCount"* ]] && ! "$2" status rejected -n "$3" >/dev/null 2>&1' _ "$out" "$helm" "$ns"
fi

# --- 4. matrix: render twice, dry-run server-side ------------------------------------------------
step "value matrix: deterministic rendering and server-side dry run"
mkdir -p "$work/values"
# NAME|RELEASE|VALUES (JSON)
matrix=(
  "default|$release|{}"
  "namespaced|$release|{\"installMode\":\"Namespaced\",\"watchNamespaces\":[\"team-a\",\"team-b\"],\"crds\":{\"enabled\":false}}"
  "namespaced-with-crds|nvt-ns|{\"installMode\":\"Namespaced\",\"watchNamespaces\":[\"team-c\"]}"
  "rollout-restart|$release|{\"rolloutRestart\":{\"enabled\":true}}"
  "namespaced-rollout-restart|$release|{\"installMode\":\"Namespaced\",\"watchNamespaces\":[\"team-a\"],\"crds\":{\"enabled\":false},\"rolloutRestart\":{\"enabled\":true}}"
  "monitoring|$release|{\"monitoring\":{\"serviceMonitor\":{\"enabled\":true},\"prometheusRule\":{\"enabled\":true},\"grafanaDashboard\":{\"enabled\":true},\"labels\":{\"release\":\"kube-prometheus-stack\"}}}"
  "proxy|$release|{\"proxy\":{\"httpsProxy\":\"http://proxy.corp.example:3128\",\"noProxy\":\".corp.example,10.0.0.0/8\"}}"
  "proxy-secret|$release|{\"proxy\":{\"httpsProxySecret\":{\"name\":\"egress-proxy\",\"key\":\"url\"}}}"
  "allow-list|$release|{\"allowedEndpointHosts\":[\"console.navigator.vmware.com\",\"console.cloud.vmware.com\",\"csp.proxy.corp.example\"]}"
  "single-replica|$release|{\"replicaCount\":1,\"leaderElection\":{\"enabled\":false},\"crds\":{\"keep\":false}}"
  "customized|nvt-shard-b|{\"image\":{\"digest\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"pullPolicy\":\"Always\"},\"imagePullSecrets\":[{\"name\":\"registry\"}],\"resources\":{\"requests\":{\"cpu\":\"50m\",\"memory\":\"64Mi\"},\"limits\":{\"memory\":\"256Mi\"}},\"nodeSelector\":{\"kubernetes.io/os\":\"linux\"},\"tolerations\":[{\"key\":\"dedicated\",\"operator\":\"Equal\",\"value\":\"platform\",\"effect\":\"NoSchedule\"}],\"affinity\":{\"nodeAffinity\":{\"requiredDuringSchedulingIgnoredDuringExecution\":{\"nodeSelectorTerms\":[{\"matchExpressions\":[{\"key\":\"node-role.example/platform\",\"operator\":\"Exists\"}]}]}}},\"topologySpreadConstraints\":[{\"maxSkew\":1,\"topologyKey\":\"kubernetes.io/hostname\",\"whenUnsatisfiable\":\"DoNotSchedule\",\"labelSelector\":{\"matchLabels\":{\"app.kubernetes.io/instance\":\"nvt-shard-b\"}}}],\"priorityClassName\":\"system-cluster-critical\",\"adminPort\":9090,\"logFormat\":\"text\",\"logLevel\":\"info,kube=warn,navigator_token_operator=debug\",\"tokenSelector\":\"navigator.dev/shard=b\",\"clusterCredentialsNamespaces\":[\"platform-credentials\",\"nvt-shard-b\"],\"commonLabels\":{\"team\":\"platform\"},\"commonAnnotations\":{\"owner\":\"platform-team\"},\"podLabels\":{\"tier\":\"control\"},\"podAnnotations\":{\"example.com/scrape\":\"true\"},\"crds\":{\"enabled\":false}}"
  "fullname-override|any-release|{\"fullnameOverride\":\"nvt\",\"rolloutRestart\":{\"enabled\":true}}"
)
# The namespaces the renderings name (created for real; dry-run objects need them).
for n in "$ns" team-a team-b team-c nvt-system nvt-shard-b platform-credentials; do
  kubectl create namespace "$n" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
done
# Objects of the Prometheus Operator are left out of the dry run (their CRDs are not in this
# cluster); .ci/helm_checks.py proves them equal to deploy/'s, which .ci/validate-manifests.sh
# validates against their schemas.
without_monitoring() {
  kubectl label --local -f - -o json nvt-helm-check- | python3 -c '
import json, sys
text, decoder, i, items, skipped = sys.stdin.read(), json.JSONDecoder(), 0, [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = decoder.raw_decode(text, i)
    for o in obj["items"] if obj.get("kind") == "List" else [obj]:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            skipped += 1
        else:
            items.append(o)
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
print(skipped, file=sys.stderr)'
}
for entry in "${matrix[@]}"; do
  IFS='|' read -r name rel values <<<"$entry"
  printf '%s\n' "$values" > "$work/values/$name.json"
  rns=$ns
  [[ $name == namespaced-with-crds ]] && rns=nvt-system
  [[ $rel == nvt-shard-b ]] && rns=nvt-shard-b
  check "$name: helm lint --strict" "$helm" lint --strict "$chart" -f "$work/values/$name.json"
  if ! "$helm" template "$rel" "$chart" -n "$rns" -f "$work/values/$name.json" > "$work/$name.yaml" 2> "$work/$name.err"; then
    fail "$name: helm template"; sed 's/^/     /' "$work/$name.err"; continue
  fi
  "$helm" template "$rel" "$chart" -n "$rns" -f "$work/values/$name.json" > "$work/$name.again.yaml"
  check "$name: rendered twice, byte-identical ($(grep -c '^kind:' "$work/$name.yaml") objects)" \
    cmp "$work/$name.yaml" "$work/$name.again.yaml"
  if without_monitoring < "$work/$name.yaml" > "$work/$name.json" 2> "$work/$name.skipped"; then
    skipped=$(tail -n1 "$work/$name.skipped")
    [[ $skipped == 0 ]] && skipped=""
    check "$name: kubectl apply --server-side --dry-run=server${skipped:+ ($skipped monitoring.coreos.com objects left out)}" \
      kubectl apply --server-side --dry-run=server --force-conflicts --field-manager=helm-ci-dry-run -f "$work/$name.json"
  else
    fail "$name: kubectl cannot decode the rendering"; sed 's/^/     /' "$work/$name.skipped"
  fi
done
# What the matrix is for, beyond "the server accepts it":
env_of() { # FILE NAME: the value of env NAME in the rendered Deployment
  kubectl label --local -f "$1" -o json nvt-helm-check- 2>/dev/null | python3 -c '
import json, sys
text, decoder, i = sys.stdin.read(), json.JSONDecoder(), 0
while i < len(text):
    obj, j = decoder.raw_decode(text, i)
    i = j
    while i < len(text) and text[i].isspace():
        i += 1
    for o in obj["items"] if obj.get("kind") == "List" else [obj]:
        if o["kind"] == "Deployment":
            for e in o["spec"]["template"]["spec"]["containers"][0].get("env", []):
                if e["name"] == sys.argv[1]:
                    print(e.get("value", json.dumps(e.get("valueFrom"), sort_keys=True)))' "$2"
}
equal "proxy: HTTPS_PROXY set" "http://proxy.corp.example:3128" "$(env_of "$work/proxy.yaml" HTTPS_PROXY)"
equal "proxy: NO_PROXY set" ".corp.example,10.0.0.0/8" "$(env_of "$work/proxy.yaml" NO_PROXY)"
equal "proxy-secret: HTTPS_PROXY from the Secret" '{"secretKeyRef": {"key": "url", "name": "egress-proxy"}}' \
  "$(env_of "$work/proxy-secret.yaml" HTTPS_PROXY)"
equal "allow-list: NAVIGATOR_ALLOWED_ENDPOINT_HOSTS" "console.navigator.vmware.com,console.cloud.vmware.com,csp.proxy.corp.example" \
  "$(env_of "$work/allow-list.yaml" NAVIGATOR_ALLOWED_ENDPOINT_HOSTS)"
equal "customized: NAVIGATOR_LEASE_NAME follows the release's names" "nvt-shard-b-navigator-token-operator" \
  "$(env_of "$work/customized.yaml" NAVIGATOR_LEASE_NAME)"
equal "customized: NAVIGATOR_ADMIN_ADDR" "0.0.0.0:9090" "$(env_of "$work/customized.yaml" NAVIGATOR_ADMIN_ADDR)"
equal "customized: NAVIGATOR_SELECTOR (tokenSelector)" "navigator.dev/shard=b" "$(env_of "$work/customized.yaml" NAVIGATOR_SELECTOR)"
equal "customized: NAVIGATOR_CLUSTER_CREDENTIALS_NAMESPACE" "platform-credentials,nvt-shard-b" \
  "$(env_of "$work/customized.yaml" NAVIGATOR_CLUSTER_CREDENTIALS_NAMESPACE)"
equal "customized: RUST_LOG (logLevel)" "info,kube=warn,navigator_token_operator=debug" "$(env_of "$work/customized.yaml" RUST_LOG)"
equal "customized: NAVIGATOR_LEADER_ELECT" "true" "$(env_of "$work/customized.yaml" NAVIGATOR_LEADER_ELECT)"
equal "single-replica: NAVIGATOR_LEADER_ELECT" "false" "$(env_of "$work/single-replica.yaml" NAVIGATOR_LEADER_ELECT)"
check "single-replica: no PodDisruptionBudget, no leader-election Role" \
  bash -c '! grep -q "^kind: PodDisruptionBudget" "$1" && ! grep -q "leader-election" "$1"' _ "$work/single-replica.yaml"
check "single-replica: CRDs without helm.sh/resource-policy (crds.keep=false)" \
  bash -c '! grep -q "helm.sh/resource-policy" "$1" && [[ $(grep -c "^kind: CustomResourceDefinition" "$1") == 2 ]]' _ "$work/single-replica.yaml"

# --- 5. install, upgrade, uninstall ------------------------------------------------------------
# can_i NS-SA EXPECTED VERB RESOURCE [kubectl auth can-i flags...]: the ServiceAccount may (yes) or may not (no).
can_i() {
  local as=$1 want=$2 got
  shift 2
  got=$(kubectl auth can-i "$@" --as="$as" 2>/dev/null || true)
  equal "RBAC: ${as##*:serviceaccount:} can-i $* = $want" "$want" "$got"
}
# exists KIND/NAME [-n NS]...: every object exists; gone: none does.
exists() { check "exists: $*" kubectl get "$@" -o name; }
gone() {
  check "gone: $*" bash -c 'out=$(kubectl get "$@" -o name --ignore-not-found 2>&1) && [[ -z $out ]] || { echo "$out"; exit 1; }' _ "$@"
}
revision() { "$helm" status "$1" -n "$2" -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["version"], d["info"]["status"])'; }
deployment_env() { # NS NAME VAR
  kubectl -n "$1" get deployment "$2" -o jsonpath="{.spec.template.spec.containers[0].env[?(@.name==\"$3\")].value}"
}
resource_versions() { # RELEASE NS: KIND/NAME=resourceVersion of every object of the release
  "$helm" get manifest "$1" -n "$2" | kubectl get -f - -o jsonpath='{range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{"\n"}{end}'
}
cluster_wide_rbac() { # ROLLOUT(yes|no)
  can_i "$sa" yes list navigatortokens.navigator.dev --all-namespaces
  can_i "$sa" yes watch navigatortokens.navigator.dev -n team-a
  can_i "$sa" yes patch navigatortokens.navigator.dev --subresource=status -n team-a
  can_i "$sa" no update navigatortokens.navigator.dev -n team-a
  can_i "$sa" yes list clusternavigatortokens.navigator.dev
  can_i "$sa" yes patch clusternavigatortokens.navigator.dev --subresource=status
  can_i "$sa" yes watch namespaces
  can_i "$sa" no get namespaces
  can_i "$sa" yes create secrets -n team-a
  can_i "$sa" yes patch secrets -n team-b
  can_i "$sa" yes delete secrets -n team-a
  can_i "$sa" no update secrets -n team-a
  can_i "$sa" no deletecollection secrets -n team-a
  can_i "$sa" yes create events.events.k8s.io -n team-a
  can_i "$sa" yes create leases.coordination.k8s.io -n "$ns"
  can_i "$sa" yes update leases.coordination.k8s.io/navigator-token-operator -n "$ns"
  can_i "$sa" no update leases.coordination.k8s.io/another-lease -n "$ns"
  can_i "$sa" no create leases.coordination.k8s.io -n team-a
  can_i "$sa" no create customresourcedefinitions.apiextensions.k8s.io
  can_i "$sa" no '*' '*' --all-namespaces
  can_i "$sa" "$1" patch deployments.apps -n team-a
  can_i "$sa" "$1" patch daemonsets.apps -n team-b
  can_i "$sa" no get deployments.apps -n team-a
}
cluster_wide_objects() {
  exists crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev
  exists clusterrole/navigator-token-operator clusterrolebinding/navigator-token-operator
  exists -n "$ns" serviceaccount/navigator-token-operator deployment/navigator-token-operator \
    service/navigator-token-operator-metrics poddisruptionbudget/navigator-token-operator \
    role/navigator-token-operator-leader-election rolebinding/navigator-token-operator-leader-election
  equal "the CRDs carry helm.sh/resource-policy: keep" "keep keep" \
    "$(kubectl get crd navigatortokens.navigator.dev clusternavigatortokens.navigator.dev -o jsonpath='{.items[*].metadata.annotations.helm\.sh/resource-policy}')"
  check "the CRDs are established" kubectl wait --for=condition=Established --timeout=60s \
    crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev
}
# Two pods, created by the ReplicaSet and admitted by Pod Security "restricted" (never started).
pods_admitted() { # NS SELECTOR COUNT
  check "$3 pods created and admitted by Pod Security restricted in $1" eventually 60 \
    bash -c '[[ $(kubectl -n "$1" get pods -l "$2" -o name | wc -l) -ge $3 ]]' _ "$1" "$2" "$3"
}
# The namespace as docs/operations.md#installing-with-helm creates it (labels of deploy/base/namespace.yaml).
labelled_namespace() {
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
  kubectl label namespace "$1" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest pod-security.kubernetes.io/warn=restricted \
    pod-security.kubernetes.io/audit=restricted >/dev/null
}

# The operator, out of cluster, as the chart's ServiceAccount with the Deployment's environment.
cargo build --locked --quiet --bin navigator-token-operator
cargo build --locked --quiet -p testkit --bin token-endpoint
target/debug/token-endpoint 600 > "$work/endpoint" 2> "$work/endpoint.log" &
pids+=($!)
eventually 30 test -s "$work/endpoint" || { fail "the token endpoint stand-in did not start"; cat "$work/endpoint.log"; }
endpoint=$(head -n1 "$work/endpoint")
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
# run_operator NS SA DEPLOYMENT LOG: starts it in the background (pid in $operator_pid).
run_operator() {
  local token kubeconfig="$work/$2.kubeconfig" envs=()
  token=$(kubectl -n "$1" create token "$2" --duration=20m)
  cat > "$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$ca"}
users:
- name: $2
  user: {token: "$token"}
contexts:
- name: $2
  context: {cluster: local, user: $2, namespace: $1}
current-context: $2
EOF
  unset token
  # The Deployment's env (values only; POD_NAME and POD_NAMESPACE come from the downward API).
  mapfile -t envs < <(kubectl -n "$1" get deployment "$3" -o json | python3 -c '
import json, sys
for e in json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]["env"]:
    if "value" in e:
        print(e["name"] + "=" + e["value"])')
  if [[ ${#envs[@]} -lt 4 ]]; then fail "the environment of Deployment $1/$3"; return; fi
  env -i PATH="$PATH" HOME="$work" KUBECONFIG="$kubeconfig" "${envs[@]}" \
    POD_NAME="helm-ci-$2" POD_NAMESPACE="$1" NAVIGATOR_ADMIN_ADDR=127.0.0.1:0 \
    target/debug/navigator-token-operator run > "$4" 2>&1 &
  operator_pid=$!
  pids+=("$operator_pid")
}
stop_operator() { # SIGTERM, as a rollout does; the Deployment grants 30 s
  kill -TERM "$operator_pid" 2>/dev/null || true
  if eventually 30 bash -c '! kill -0 "$1"' _ "$operator_pid"; then
    pass "the operator stopped on SIGTERM"
  else
    fail "the operator did not stop within 30 s of SIGTERM"
    kill -KILL "$operator_pid" 2>/dev/null || true
  fi
  wait "$operator_pid" 2>/dev/null || true
}
navigator_token() { # NS NAME [ROLLOUT-TARGET]
  local restart=""
  [[ -n ${3:-} ]] && restart="  rolloutRestartTargets: [{kind: Deployment, name: $3}]"
  kubectl -n "$1" create secret generic "$2-oauth" --from-literal=client_id=testkit-client \
    --from-literal=client_secret=testkit-secret --dry-run=client -o yaml \
    | kubectl label --local -f - -o yaml navigator.dev/credentials=true | kubectl apply --server-side -f - >/dev/null
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: navigator.dev/v1alpha1
kind: NavigatorToken
metadata: {name: $2, namespace: $1}
spec:
  orgId: 6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4
  credentialsSecretRef: {name: $2-oauth}
  endpoint: {type: CSP, url: "$endpoint"}
  validity: 10m
  refreshBefore: 3m
  target: {secretName: $2-token}
$restart
EOF
}
secret_written() { # NS SECRET: holds a token (its length is checked, never printed)
  check "the operator wrote Secret $1/$2" eventually 60 \
    bash -c '[[ -n $(kubectl -n "$1" get secret "$2" -o jsonpath="{.metadata.annotations.navigator\.dev/issued-at}" 2>/dev/null) && $(kubectl -n "$1" get secret "$2" -o jsonpath="{.data.token}" | wc -c) -gt 20 ]]' _ "$1" "$2"
}
log_clean() { # LOG
  check "the operator's log has no RBAC denial" bash -c '! grep -i -E "forbidden|cannot (list|watch|get|create|patch|update)" "$1"' _ "$1"
}

step "helm install (cluster-wide, defaults)"
labelled_namespace "$ns"
check "helm install $release $chart -n $ns" "$helm" install "$release" "$chart" -n "$ns"
equal "release after install" "1 deployed" "$(revision "$release" "$ns")"
cluster_wide_objects
equal "Deployment replicas" "2" "$(kubectl -n "$ns" get deployment navigator-token-operator -o jsonpath='{.spec.replicas}')"
equal "NAVIGATOR_LOG_FORMAT after install" "json" "$(deployment_env "$ns" navigator-token-operator NAVIGATOR_LOG_FORMAT)"
pods_admitted "$ns" app.kubernetes.io/name=navigator-token-operator 2
cluster_wide_rbac no

step "helm upgrade with changed values"
upgrade=(--set rolloutRestart.enabled=true --set logFormat=text --set 'allowedEndpointHosts={127.0.0.1}')
check "helm upgrade $release ${upgrade[*]}" "$helm" upgrade "$release" "$chart" -n "$ns" "${upgrade[@]}"
equal "release after upgrade" "2 deployed" "$(revision "$release" "$ns")"
equal "NAVIGATOR_LOG_FORMAT after upgrade" "text" "$(deployment_env "$ns" navigator-token-operator NAVIGATOR_LOG_FORMAT)"
equal "NAVIGATOR_ALLOWED_ENDPOINT_HOSTS after upgrade" "127.0.0.1" \
  "$(deployment_env "$ns" navigator-token-operator NAVIGATOR_ALLOWED_ENDPOINT_HOSTS)"
cluster_wide_objects
cluster_wide_rbac yes

step "a second upgrade with the same values"
before=$(resource_versions "$release" "$ns")
check "helm upgrade $release (same values)" "$helm" upgrade "$release" "$chart" -n "$ns" "${upgrade[@]}"
equal "release after the second upgrade" "3 deployed" "$(revision "$release" "$ns")"
check "revisions 2 and 3 have the same manifest" \
  cmp <("$helm" get manifest "$release" -n "$ns" --revision 2) <("$helm" get manifest "$release" -n "$ns" --revision 3)
after=$(resource_versions "$release" "$ns")
equal "no object changed (resourceVersions of $(printf '%s\n' "$after" | grep -c .) objects)" "$before" "$after"

step "the operator, out of cluster, as the chart's ServiceAccount"
kubectl -n team-a create deployment consumer --image=registry.example/consumer:1 --dry-run=client -o yaml \
  | kubectl apply --server-side -f - >/dev/null
navigator_token team-a partner-api consumer
kubectl -n "$ns" create secret generic vendor-oauth --from-literal=client_id=testkit-client \
  --from-literal=client_secret=testkit-secret --dry-run=client -o yaml \
  | kubectl label --local -f - -o yaml navigator.dev/credentials=true | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: navigator.dev/v1alpha1
kind: ClusterNavigatorToken
metadata: {name: vendor-api}
spec:
  orgId: 6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4
  credentialsSecretRef: {name: vendor-oauth, namespace: $ns}
  endpoint: {type: CSP, url: "$endpoint"}
  validity: 10m
  target: {secretName: vendor-token, namespaces: [team-b]}
EOF
run_operator "$ns" navigator-token-operator navigator-token-operator "$work/operator.log"
secret_written team-a partner-api-token
check "NavigatorToken team-a/partner-api is Ready" kubectl -n team-a wait --for=condition=Ready nvt/partner-api --timeout=30s
secret_written team-b vendor-token
check "ClusterNavigatorToken vendor-api is Ready" kubectl wait --for=condition=Ready cnvt/vendor-api --timeout=30s
check "the operator published an Issued Event" eventually 30 \
  bash -c '[[ -n $(kubectl -n team-a get events.events.k8s.io --field-selector reason=Issued -o name) ]]'
check "the operator restarted Deployment team-a/consumer (rolloutRestart.enabled)" eventually 30 \
  bash -c '[[ -n $(kubectl -n team-a get deployment consumer -o jsonpath="{.spec.template.metadata.annotations.navigator\.dev/restarted-at}") ]]'
equal "the operator holds the chart's Lease" "helm-ci-navigator-token-operator" \
  "$(kubectl -n "$ns" get lease navigator-token-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)"
stop_operator
log_clean "$work/operator.log"

step "helm uninstall (CRDs kept)"
check "helm uninstall $release" bash -c '"$1" uninstall "$2" -n "$3" > "$4" 2>&1' _ "$helm" "$release" "$ns" "$work/uninstall.log"
check "helm uninstall says it kept the CRDs" grep -q "resource policy" "$work/uninstall.log"
gone -n "$ns" deployment/navigator-token-operator serviceaccount/navigator-token-operator \
  service/navigator-token-operator-metrics poddisruptionbudget/navigator-token-operator \
  role/navigator-token-operator-leader-election rolebinding/navigator-token-operator-leader-election
gone clusterrole/navigator-token-operator clusterrolebinding/navigator-token-operator
exists crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev
exists -n team-a navigatortoken/partner-api secret/partner-api-token
can_i "$sa" no list navigatortokens.navigator.dev --all-namespaces
check "helm list is empty" bash -c '[[ -z $("$1" list -n "$2" -q) ]]' _ "$helm" "$ns"

step "a namespaced release (nvt-ns in nvt-system, watching team-c, CRDs from before)"
nsa="system:serviceaccount:nvt-system:nvt-ns-navigator-token-operator"
labelled_namespace nvt-system
check "helm install nvt-ns (Namespaced)" "$helm" install nvt-ns "$chart" -n nvt-system \
  --set installMode=Namespaced --set 'watchNamespaces={team-c}' --set crds.enabled=false \
  --set 'allowedEndpointHosts={127.0.0.1}'
equal "release nvt-ns after install" "1 deployed" "$(revision nvt-ns nvt-system)"
exists -n team-c role/nvt-ns-navigator-token-operator rolebinding/nvt-ns-navigator-token-operator
exists -n nvt-system deployment/nvt-ns-navigator-token-operator role/nvt-ns-navigator-token-operator-leader-election
gone clusterrole/nvt-ns-navigator-token-operator clusterrolebinding/nvt-ns-navigator-token-operator
equal "NAVIGATOR_NAMESPACES" "team-c" "$(deployment_env nvt-system nvt-ns-navigator-token-operator NAVIGATOR_NAMESPACES)"
equal "NAVIGATOR_LEASE_NAME" "nvt-ns-navigator-token-operator" \
  "$(deployment_env nvt-system nvt-ns-navigator-token-operator NAVIGATOR_LEASE_NAME)"
pods_admitted nvt-system app.kubernetes.io/instance=nvt-ns 2
can_i "$nsa" yes list navigatortokens.navigator.dev -n team-c
can_i "$nsa" yes patch navigatortokens.navigator.dev --subresource=status -n team-c
can_i "$nsa" yes create secrets -n team-c
can_i "$nsa" yes create events.events.k8s.io -n team-c
can_i "$nsa" no list navigatortokens.navigator.dev -n team-a
can_i "$nsa" no list navigatortokens.navigator.dev --all-namespaces
can_i "$nsa" no get secrets -n team-a
can_i "$nsa" no delete secrets -n team-c
can_i "$nsa" no list clusternavigatortokens.navigator.dev
can_i "$nsa" no list namespaces
can_i "$nsa" no patch deployments.apps -n team-c
can_i "$nsa" yes update leases.coordination.k8s.io/nvt-ns-navigator-token-operator -n nvt-system
can_i "$nsa" no update leases.coordination.k8s.io/navigator-token-operator -n nvt-system
navigator_token team-c billing-api
run_operator nvt-system nvt-ns-navigator-token-operator nvt-ns-navigator-token-operator "$work/operator-ns.log"
secret_written team-c billing-api-token
equal "the namespaced operator holds its own Lease" "helm-ci-nvt-ns-navigator-token-operator" \
  "$(kubectl -n nvt-system get lease nvt-ns-navigator-token-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)"
stop_operator
log_clean "$work/operator-ns.log"
check "helm uninstall nvt-ns" "$helm" uninstall nvt-ns -n nvt-system
gone -n team-c role/nvt-ns-navigator-token-operator rolebinding/nvt-ns-navigator-token-operator
gone -n nvt-system deployment/nvt-ns-navigator-token-operator

step "crds.keep=false: a new release takes the kept CRDs over, and its uninstall deletes them"
check "helm install $release --set crds.keep=false" "$helm" install "$release" "$chart" -n "$ns" --set crds.keep=false
equal "the CRDs no longer carry helm.sh/resource-policy" "" \
  "$(kubectl get crd navigatortokens.navigator.dev -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')"
check "helm uninstall $release" "$helm" uninstall "$release" -n "$ns"
check "the CRDs are deleted" kubectl wait --for=delete --timeout=60s \
  crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev

step "from kubectl apply -k deploy/ to Helm: --take-ownership changes no object; crds.enabled=false keeps the CRDs"
check "kubectl apply --server-side -k deploy/" kubectl apply --server-side -k deploy/
kubectl wait --for=condition=Established --timeout=60s crd/navigatortokens.navigator.dev >/dev/null 2>&1 || true
# What taking over must not change: the objects, the Deployment's spec (its generation moves:
# Helm's ownership annotations count for a Deployment), its ReplicaSets (no pod restarts), the
# CRDs' generation, the ClusterRole's rules.
generations() {
  kubectl -n "$ns" get deployment,service,serviceaccount,role,rolebinding,poddisruptionbudget,replicaset -o name | sort
  kubectl -n "$ns" get deployment navigator-token-operator -o jsonpath='{.spec}{"\n"}'
  kubectl get crd navigatortokens.navigator.dev clusternavigatortokens.navigator.dev -o jsonpath='{.items[*].metadata.generation}{"\n"}'
  kubectl get clusterrole navigator-token-operator -o jsonpath='{.rules}{"\n"}'
}
eventually 30 bash -c '[[ -n $(kubectl -n "$1" get replicaset -o name) ]]' _ "$ns" || true
before=$(generations)
check "helm install $release --take-ownership over deploy/" "$helm" install "$release" "$chart" -n "$ns" --take-ownership
sleep 2 # a changed pod template would have a new ReplicaSet by now
equal "release after taking over deploy/'s objects" "1 deployed" "$(revision "$release" "$ns")"
equal "the same objects: Deployment spec, ReplicaSets, CRD generations, ClusterRole rules" "$before" "$(generations)"
cluster_wide_rbac no
check "helm upgrade $release --set crds.enabled=false" "$helm" upgrade "$release" "$chart" -n "$ns" --set crds.enabled=false
exists crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev
check "helm uninstall $release" "$helm" uninstall "$release" -n "$ns"
exists crd/navigatortokens.navigator.dev crd/clusternavigatortokens.navigator.dev

echo "helm checks took $((SECONDS - started)) s (building or finding helm: $build_took s)"
echo "helm checks: $passed passed, $failed failed"
((failed == 0))
