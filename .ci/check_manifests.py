#!/usr/bin/env python3
"""Offline sanity checks of rendered deploy/ manifests and of examples/.

  check_manifests.py rendered --mode cluster-wide|namespaced [--namespace NS] [--without-crd]
                             [--rollout-restart] [--monitoring --docs docs/operations.md]
                             [--dockerfile Dockerfile] FILE
  check_manifests.py shards FILE FILE...
  check_manifests.py examples FILE...

`rendered` checks what a client-side dry run cannot without a cluster: references
between objects (selectors, ServiceAccount, roleRefs, probe ports), the hardening the
docs promise, and the operator ServiceAccount's effective RBAC, which must be exactly
the permissions below -- nothing missing, nothing extra, no `*`, no `delete`;
with --rollout-restart (deploy/components/rollout-restart enabled) also exactly
ROLLOUT_RESTART_PERMS in every watched namespace, and without it none of them;
with --monitoring (deploy/components/monitoring enabled) the ServiceMonitor, the
PrometheusRule and the dashboard ConfigMap, consistent with the Service, with the
metrics documented in --docs and with its runbook sections; without it none of them.
`shards` checks that the renders of the instances of one sharded install can live in
one cluster: each selects its NavigatorTokens, the selectors are disjoint, each has its
own namespace (so its own Lease), and no object of one overwrites another's.
`examples` checks the conventions the operator relies on in user-written objects, and
what docs/operations.md#consuming-the-token promises of the example workloads: Pod
Security "restricted", the token Secret mounted without subPath, Secret templates
without `}}}` or key clashes, rollout targets that exist.
Needs PyYAML. Exit status 0 if all checks pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys

import yaml

OPERATOR = "navigator-token-operator"
IMAGE_REPO = "ghcr.io/navigator-dev/navigator-token-operator"
DEFAULT_LEASE_NAME = OPERATOR  # --lease-name default
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
REQUIRED_LABELS = {"app.kubernetes.io/name": OPERATOR, "app.kubernetes.io/part-of": OPERATOR}
CREDENTIALS_LABEL = ("navigator.dev/credentials", "true")
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", OPERATOR)

# (apiGroup, resource, verb) the operator needs in every watched namespace. Keep in
# sync with deploy/clusterrole.yaml, the namespaced overlay and docs/operations.md.
WATCHED_NAMESPACE_PERMS = {
    ("navigator.dev", "navigatortokens", v) for v in ("get", "list", "watch")
} | {
    ("navigator.dev", "navigatortokens/status", "patch"),
} | {
    ("", "secrets", v) for v in ("get", "list", "watch", "create", "patch")
} | {
    ("events.k8s.io", "events", "create")
}
# Cluster-wide install only (ClusterNavigatorTokens: cluster-scoped, writing into every selected
# namespace; the namespaced install leaves the kind out). `delete` on secrets is the one delete
# granted: the operator removes the Secrets it wrote in namespaces a ClusterNavigatorToken no
# longer selects. RBAC cannot narrow it to labelled Secrets (docs/operations.md#rbac says how to).
CLUSTER_TOKEN_PERMS = {
    ("navigator.dev", "clusternavigatortokens", v) for v in ("get", "list", "watch")
} | {
    ("navigator.dev", "clusternavigatortokens/status", "patch"),
} | {
    ("", "namespaces", v) for v in ("list", "watch")
} | {
    ("", "secrets", "delete"),
}
# Added in every watched namespace by the opt-in component deploy/components/rollout-restart
# (spec.rolloutRestartTargets): exactly `patch`, so the operator can set the restart
# annotation on a pod template but cannot read, list or replace workloads.
ROLLOUT_RESTART_PERMS = {("apps", r, "patch") for r in ("deployments", "statefulsets", "daemonsets")}
# Needed in the operator's own namespace only (leader election).
OPERATOR_NAMESPACE_PERMS = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
FORBIDDEN_VERBS = {"delete", "deletecollection", "escalate", "bind", "impersonate", "*"}
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Keys the Prometheus Operator knows (the npm schemas do not reject unknown ones).
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
ENDPOINT_KEYS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                 "honorTimestamps", "tlsConfig", "authorization", "bearerTokenSecret", "basicAuth",
                 "oauth2", "params", "relabelings", "metricRelabelings", "followRedirects",
                 "enableHttp2", "filterRunning", "proxyUrl", "trackTimestampsStaleness"}
SEVERITIES = {"critical", "warning", "info"}


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.count = 0

    def check(self, cond: bool, msg: str) -> bool:
        self.count += 1
        if not cond:
            self.errors.append(msg)
        return cond


def load(paths: list[str]) -> list[tuple[str, dict]]:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    out.append((p, d))
    return out


def ident(d: dict) -> str:
    m = d.get("metadata") or {}
    ns = m.get("namespace")
    return f"{d.get('kind')}/{(ns + '/') if ns else ''}{m.get('name')}"


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def subset(sel: dict | None, labels: dict | None) -> bool:
    return bool(sel) and all((labels or {}).get(k) == v for k, v in sel.items())


def env_map(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env") or []}


def lease_name(container: dict) -> str:
    """The Lease name: --lease-name in the container args, else NAVIGATOR_LEASE_NAME, else the default."""
    args = [str(a) for a in container.get("args") or []]
    name = env_map(container).get("NAVIGATOR_LEASE_NAME", {}).get("value") or DEFAULT_LEASE_NAME
    for i, a in enumerate(args):
        if a.startswith("--lease-name="):
            name = a.split("=", 1)[1]
        elif a == "--lease-name" and i + 1 < len(args):
            name = args[i + 1]
    return name


def check_structure(c: Checker, docs: list[dict], want_ns: str = OPERATOR) -> str:
    seen = set()
    op_ns = None
    for d in docs:
        if d.get("kind") == "Namespace":
            op_ns = d["metadata"]["name"]
    c.check(op_ns == want_ns, f"expected a Namespace {want_ns}, found {op_ns!r}")
    for d in docs:
        m = d.get("metadata") or {}
        ok = c.check(bool(d.get("apiVersion")) and bool(d.get("kind")) and bool(m.get("name")),
                     f"object without apiVersion/kind/metadata.name: {d!r:.120}")
        if not ok:
            continue
        key = (group_of(d["apiVersion"]), d["kind"], m.get("namespace"), m["name"])
        c.check(key not in seen, f"duplicate object {ident(d)}")
        seen.add(key)
        if d["kind"] in CLUSTER_SCOPED:
            c.check("namespace" not in m, f"{ident(d)}: cluster-scoped object must not set metadata.namespace")
        else:
            c.check(bool(m.get("namespace")), f"{ident(d)}: namespaced object has no metadata.namespace")
        labels = m.get("labels") or {}
        for k, v in REQUIRED_LABELS.items():
            c.check(labels.get(k) == v, f"{ident(d)}: missing label {k}={v}")
    return op_ns or OPERATOR


def check_deployment(c: Checker, docs: list[dict], op_ns: str, dockerfile: str | None) -> dict:
    deps = [d for d in docs if d.get("kind") == "Deployment"]
    if not c.check(len(deps) == 1, f"expected exactly one Deployment, found {len(deps)}"):
        return {}
    dep = deps[0]
    spec = dep["spec"]
    tmpl = spec["template"]
    pod = tmpl["spec"]
    plabels = tmpl["metadata"].get("labels") or {}
    c.check(dep["metadata"].get("namespace") == op_ns, "Deployment must live in the operator namespace")
    c.check(spec.get("replicas") == 2, "Deployment must run 2 replicas")
    c.check(subset(spec["selector"].get("matchLabels"), plabels), "Deployment selector does not match its pod labels")
    sas = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d.get("kind") == "ServiceAccount"}
    c.check((op_ns, pod.get("serviceAccountName")) in sas, f"ServiceAccount {pod.get('serviceAccountName')!r} is not rendered")
    c.check(pod.get("automountServiceAccountToken") is True, "automountServiceAccountToken must be true (in-cluster config)")
    c.check(pod.get("terminationGracePeriodSeconds") == 30, "terminationGracePeriodSeconds must be 30")
    psc = pod.get("securityContext") or {}
    c.check(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot must be true")
    c.check(psc.get("runAsUser") == 65532, "pod securityContext.runAsUser must be 65532")
    c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "pod seccompProfile must be RuntimeDefault")
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
    c.check(bool(anti.get("preferredDuringSchedulingIgnoredDuringExecution")), "preferred pod anti-affinity missing")
    c.check(not anti.get("requiredDuringSchedulingIgnoredDuringExecution"), "pod anti-affinity must be preferred, not required")
    for term in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        sel = term["podAffinityTerm"].get("labelSelector", {}).get("matchLabels")
        c.check(subset(sel, plabels), "anti-affinity labelSelector does not match the pods")
    for tsc in pod.get("topologySpreadConstraints") or []:
        c.check(tsc.get("whenUnsatisfiable") == "ScheduleAnyway", "topology spread must be ScheduleAnyway (preferred)")
        c.check(subset(tsc.get("labelSelector", {}).get("matchLabels"), plabels), "topology spread selector does not match the pods")

    containers = pod.get("containers") or []
    if not c.check(len(containers) == 1, "expected one container"):
        return dep
    ctr = containers[0]
    image = ctr.get("image", "")
    c.check(re.fullmatch(re.escape(IMAGE_REPO) + r"(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?", image) is not None
            and (":" in image.rsplit("/", 1)[-1] or "@" in image) and not image.endswith(":latest"),
            f"image must be {IMAGE_REPO} pinned to a version tag or digest, got {image!r}")
    c.check(not ctr.get("command"), "container must rely on the image ENTRYPOINT (`navigator-token-operator run`)")
    sc = ctr.get("securityContext") or {}
    c.check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    c.check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    c.check((sc.get("capabilities") or {}).get("drop") == ["ALL"], "capabilities must drop ALL")
    c.check(not (sc.get("capabilities") or {}).get("add"), "no capabilities may be added")
    c.check(sc.get("privileged") in (None, False), "container must not be privileged")
    res = ctr.get("resources") or {}
    for k in ("cpu", "memory"):
        c.check(k in (res.get("requests") or {}), f"resources.requests.{k} missing")
    c.check("memory" in (res.get("limits") or {}), "resources.limits.memory missing")
    ports = {p.get("name"): p for p in ctr.get("ports") or []}
    c.check(ports.get("admin", {}).get("containerPort") == 8080, "container port 8080 must be named admin")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = (ctr.get(probe) or {}).get("httpGet") or {}
        c.check(get.get("path") == path and get.get("port") == "admin", f"{probe} must GET {path} on port admin")
    env = env_map(ctr)
    c.check(env.get("NAVIGATOR_LEADER_ELECT", {}).get("value") == "true",
            "NAVIGATOR_LEADER_ELECT must be \"true\" (2 replicas without leader election would both write)")
    c.check(env.get("NAVIGATOR_INSTALL_CRD", {}).get("value", "false") == "false",
            "NAVIGATOR_INSTALL_CRD must stay off (kustomize applies the CRD; the RBAC has no CRD rights)")
    for var, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        ref = (env.get(var, {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        c.check(ref == field, f"{var} must come from the downward API ({field})")
    addr = env.get("NAVIGATOR_ADMIN_ADDR", {}).get("value", "0.0.0.0:8080")
    c.check(addr.endswith(":8080"), f"NAVIGATOR_ADMIN_ADDR {addr!r} does not listen on the probed port 8080")

    if dockerfile:
        with open(dockerfile, encoding="utf-8") as f:
            text = f.read()
        final_stage = re.split(r"(?im)^FROM\s", text)[-1]
        user = re.findall(r"(?im)^USER\s+(\S+)", final_stage)
        c.check(user[-1:] == [f"{psc.get('runAsUser')}:{psc.get('runAsGroup')}"] if user else False,
                f"{dockerfile}: final stage USER {user[-1:] or None} does not match the pod's runAsUser:runAsGroup")
        c.check(re.search(r'(?im)^ENTRYPOINT\s+\[\s*"/navigator-token-operator"\s*,\s*"run"\s*\]', final_stage) is not None,
                f"{dockerfile}: final stage ENTRYPOINT must be [\"/navigator-token-operator\", \"run\"]")

    for d in docs:
        if d.get("kind") == "Service":
            c.check(subset(d["spec"].get("selector"), plabels), f"{ident(d)}: selector does not match the operator pods")
            sp = {p.get("name"): p for p in d["spec"].get("ports") or []}
            c.check(sp.get("metrics", {}).get("port") == 8080 and sp["metrics"].get("targetPort") in ("admin", 8080),
                    f"{ident(d)}: needs port 8080 named metrics targeting the admin port")
        if d.get("kind") == "PodDisruptionBudget":
            c.check(subset(d["spec"].get("selector", {}).get("matchLabels"), plabels), f"{ident(d)}: selector does not match the pods")
            c.check(d["spec"].get("minAvailable") == 1, f"{ident(d)}: minAvailable must be 1")
    return dep


def check_rbac(c: Checker, docs: list[dict], op_ns: str, dep: dict, mode: str, with_crd: bool = True,
               rollout_restart: bool = False) -> None:
    roles = {}
    for d in docs:
        if d.get("kind") in ("Role", "ClusterRole"):
            m = d["metadata"]
            roles[(d["kind"], m.get("namespace"), m["name"])] = d
            c.check(not d.get("aggregationRule"), f"{ident(d)}: aggregationRule not allowed")
            for r in d.get("rules") or []:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    c.check("*" not in (r.get(field) or []), f"{ident(d)}: `*` in {field}")
                c.check(not r.get("nonResourceURLs"), f"{ident(d)}: nonResourceURLs not allowed")
                bad = FORBIDDEN_VERBS & set(r.get("verbs") or [])
                if "secrets" in (r.get("resources") or []):
                    # Only the cluster-wide ClusterRole may delete Secrets (ClusterNavigatorTokens).
                    if d.get("kind") == "ClusterRole" and set(r.get("resources") or []) == {"secrets"}:
                        bad -= {"delete"}
                    c.check(not bad, f"{ident(d)}: forbidden verb(s) {sorted(bad)} on secrets")
                else:
                    c.check(not bad, f"{ident(d)}: forbidden verb(s) {sorted(bad)}")

    pod = dep["spec"]["template"]["spec"] if dep else {}
    sa = pod.get("serviceAccountName", OPERATOR)
    ctr = (pod.get("containers") or [{}])[0]
    raw_ns = env_map(ctr).get("NAVIGATOR_NAMESPACES", {}).get("value", "")
    watched = sorted({n.strip() for n in raw_ns.split(",") if n.strip()})
    cluster_wide = not watched
    c.check(cluster_wide == (mode == "cluster-wide"),
            f"--mode {mode} but NAVIGATOR_NAMESPACES={raw_ns!r} (empty means all namespaces)")
    has_crd = any(d.get("kind") == "CustomResourceDefinition" for d in docs)
    if mode == "cluster-wide":
        c.check(has_crd == with_crd, "the cluster-wide install must include the CRD" if with_crd
                else "this install must not include the CRD (another instance installs it)")
    else:
        c.check(not has_crd, "the namespaced install must not include the cluster-scoped CRD (admin installs crds/)")
        c.check(not any(d.get("kind") in ("ClusterRole", "ClusterRoleBinding") for d in docs),
                "the namespaced install must not contain ClusterRoles or ClusterRoleBindings")

    # Effective grants of the operator ServiceAccount: (scope, group, resource, verb, resourceNames).
    grants = []
    for d in docs:
        if d.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subj = [s for s in d.get("subjects") or [] if s.get("kind") == "ServiceAccount"]
        for s in d.get("subjects") or []:
            c.check(s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) == (op_ns, sa),
                    f"{ident(d)}: unexpected subject {s}")
        if not subj:
            continue
        ref = d["roleRef"]
        bns = d["metadata"].get("namespace")
        key = (ref["kind"], bns if ref["kind"] == "Role" else None, ref["name"])
        role = roles.get(key)
        if not c.check(role is not None, f"{ident(d)}: roleRef {ref['kind']}/{ref['name']} is not rendered"):
            continue
        scope = "*" if d["kind"] == "ClusterRoleBinding" else bns
        for r in role.get("rules") or []:
            for g in r.get("apiGroups") or []:
                for res in r.get("resources") or []:
                    for v in r.get("verbs") or []:
                        grants.append((scope, g, res, v, tuple(r.get("resourceNames") or ())))

    def granted(scope_ok, perm, names_ok=lambda n: not n) -> bool:
        return any(scope_ok(g[0]) and g[1:4] == perm and names_ok(g[4]) for g in grants)

    lease = lease_name(ctr)
    targets = ["*"] if cluster_wide else watched
    watched_perms = WATCHED_NAMESPACE_PERMS | (ROLLOUT_RESTART_PERMS if rollout_restart else set())
    for ns in targets:
        for perm in sorted(watched_perms):
            where = "cluster-wide" if ns == "*" else f"namespace {ns}"
            c.check(granted(lambda s, ns=ns: s == ns or s == "*", perm), f"missing RBAC {perm} in {where}")
    if cluster_wide:
        for perm in sorted(CLUSTER_TOKEN_PERMS):
            c.check(granted(lambda s: s == "*", perm), f"missing RBAC {perm} cluster-wide (ClusterNavigatorTokens)")
    for perm in sorted(OPERATOR_NAMESPACE_PERMS):
        if perm[2] == "create":  # create cannot be restricted by resourceNames
            ok = granted(lambda s: s in (op_ns, "*"), perm)
        else:
            ok = granted(lambda s: s in (op_ns, "*"), perm, lambda n: not n or lease in n)
        c.check(ok, f"missing RBAC {perm} on Lease {lease} in namespace {op_ns} (leader election)")

    for scope, g, res, v, names in grants:
        perm = (g, res, v)
        needed = (perm in watched_perms and (scope in targets)) or (
            perm in OPERATOR_NAMESPACE_PERMS and scope == op_ns
        ) or (perm in CLUSTER_TOKEN_PERMS and cluster_wide and scope == "*")
        if perm in ROLLOUT_RESTART_PERMS and not rollout_restart:
            c.check(False, f"RBAC grants {perm} in {'all namespaces' if scope == '*' else scope}: only the opt-in "
                           "component deploy/components/rollout-restart may grant it (check with --rollout-restart)")
            continue
        c.check(needed, f"RBAC grants {perm} in {'all namespaces' if scope == '*' else scope} "
                        f"{'(resourceNames ' + ','.join(names) + ') ' if names else ''}which the operator does not need; "
                        "if it now does, update .ci/check_manifests.py and docs/operations.md")


def markdown_anchors(path: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than `-` and `_` dropped, spaces to `-`."""
    anchors = set()
    with open(path, encoding="utf-8") as f:
        in_code = False
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            m = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
            if m:
                text = re.sub(r"[`*]", "", m[1]).lower()
                anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def documented_metrics(path: str) -> set[str]:
    """Metric names in the first column of docs' metrics table."""
    with open(path, encoding="utf-8") as f:
        return set(re.findall(r"(?m)^\| `(navigator_\w+)` \|", f.read()))


def used_metrics(expr: str) -> set[str]:
    names = set(re.findall(r"\bnavigator_\w+", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n for n in names}


def check_monitoring(c: Checker, docs: list[dict], op_ns: str, docs_path: str | None) -> None:
    """The objects of deploy/components/monitoring: present, pointing at the Service, consistent with the docs."""
    import json

    documented = documented_metrics(docs_path) if docs_path else set()
    anchors = markdown_anchors(docs_path) if docs_path else set()
    c.check(bool(documented), f"{docs_path}: no metrics table found")
    services = [d for d in docs if d.get("kind") == "Service"]
    sms = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    if c.check(len(sms) == 1, f"expected one ServiceMonitor, found {len(sms)}"):
        sm = sms[0]
        c.check(sm["metadata"].get("namespace") == op_ns, f"{ident(sm)}: must live in the operator namespace {op_ns}")
        spec = sm.get("spec") or {}
        c.check(not spec.get("namespaceSelector"), f"{ident(sm)}: namespaceSelector would look beyond its own namespace")
        sel = (spec.get("selector") or {}).get("matchLabels")
        targets = [s for s in services if s["metadata"].get("namespace") == op_ns and subset(sel, s["metadata"].get("labels"))]
        if c.check(len(targets) == 1, f"{ident(sm)}: selector {sel} matches {len(targets)} Services, expected 1"):
            ports = {p.get("name") for p in targets[0]["spec"].get("ports") or []}
            for ep in spec.get("endpoints") or []:
                c.check(ep.get("port") in ports, f"{ident(sm)}: endpoint port {ep.get('port')!r} is not a port name of {ident(targets[0])}")
                c.check(ep.get("path", "/metrics") == "/metrics", f"{ident(sm)}: endpoint path must be /metrics")
                c.check(ep.get("honorLabels") is True, f"{ident(sm)}: honorLabels must be true (per-token series carry their own namespace label)")
                extra = set(ep) - ENDPOINT_KEYS
                c.check(not extra, f"{ident(sm)}: unknown endpoint field(s) {sorted(extra)}")
        c.check(bool(spec.get("endpoints")), f"{ident(sm)}: no endpoints")
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if c.check(len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"):
        pr = rules[0]
        c.check(pr["metadata"].get("namespace") == op_ns, f"{ident(pr)}: must live in the operator namespace {op_ns}")
        alerts = []
        for group in (pr.get("spec") or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                where = f"{ident(pr)}: rule {name!r}"
                extra = set(rule) - RULE_KEYS
                c.check(not extra, f"{where}: unknown field(s) {sorted(extra)}")
                for metric in sorted(used_metrics(str(rule.get("expr", "")))):
                    c.check(metric in documented, f"{where}: {metric} is not in the metrics table of {docs_path}")
                if not rule.get("alert"):
                    continue
                alerts.append(name)
                c.check((rule.get("labels") or {}).get("severity") in SEVERITIES, f"{where}: severity label must be one of {sorted(SEVERITIES)}")
                ann = rule.get("annotations") or {}
                c.check(bool(ann.get("summary")), f"{where}: no summary annotation")
                url = str(ann.get("runbook_url", ""))
                m = re.fullmatch(r"docs/operations\.md#([\w-]+)", url)
                c.check(m is not None and m[1] in anchors,
                        f"{where}: runbook_url {url!r} must be docs/operations.md#<a section of {docs_path}>")
                c.check(m is None or m[1] == name.lower(), f"{where}: its runbook section must be titled {name}")
        c.check(len(alerts) == len(set(alerts)) and alerts, f"{ident(pr)}: alerts missing or duplicated: {alerts}")
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if c.check(len(cms) == 1, f"expected one ConfigMap labelled grafana_dashboard=1, found {len(cms)}"):
        cm = cms[0]
        c.check(cm["metadata"].get("namespace") == op_ns, f"{ident(cm)}: must live in the operator namespace {op_ns}")
        for key, text in (cm.get("data") or {}).items():
            where = f"{ident(cm)}: {key}"
            c.check(key.endswith(".json"), f"{where}: the sidecar expects a .json key")
            try:
                dash = json.loads(text)
            except ValueError as e:
                c.check(False, f"{where}: not JSON: {e}")
                continue
            c.check(bool(dash.get("uid")) and bool(dash.get("title")), f"{where}: needs uid and title")
            ids = [p.get("id") for p in dash.get("panels") or []]
            c.check(bool(ids) and len(ids) == len(set(ids)), f"{where}: panels missing or with duplicate ids")
            for panel in dash.get("panels") or []:
                for t in panel.get("targets") or []:
                    for metric in sorted(used_metrics(str(t.get("expr", "")))):
                        c.check(metric in documented, f"{where}: panel {panel.get('title')!r}: {metric} is not in the metrics table")


def cmd_rendered(args) -> Checker:
    c = Checker()
    docs = [d for _, d in load([args.file])]
    op_ns = check_structure(c, docs, args.namespace)
    dep = check_deployment(c, docs, op_ns, args.dockerfile)
    check_rbac(c, docs, op_ns, dep, args.mode, not args.without_crd, args.rollout_restart)
    if args.monitoring:
        check_monitoring(c, docs, op_ns, args.docs)
    else:
        present = sorted(ident(d) for d in docs if d.get("kind") in MONITORING_KINDS)
        c.check(not present, f"{present}: only the opt-in component deploy/components/monitoring adds these (check with --monitoring)")
    return c


def selector_terms(selector: str) -> list[tuple[str, str, str]] | None:
    """`key=value`, `key==value` and `key!=value` terms; None for any other selector syntax."""
    terms = []
    for part in selector.split(","):
        m = re.fullmatch(r"\s*([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)\s*", part)
        if not m:
            return None
        terms.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
    return terms


def disjoint(a: str, b: str) -> bool:
    """True if no labels can match both selectors (for the equality forms only)."""
    ta, tb = selector_terms(a), selector_terms(b)
    if ta is None or tb is None:
        return False
    for ka, opa, va in ta:
        for kb, opb, vb in tb:
            if ka == kb and ((opa, opb) == ("=", "=") and va != vb or opa != opb and va == vb):
                return True
    return False


def cmd_shards(args) -> Checker:
    c = Checker()
    instances = []  # (file, operator namespace, selector, docs)
    for path in args.files:
        docs = [d for _, d in load([path])]
        nss = [d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"]
        deps = [d for d in docs if d.get("kind") == "Deployment"]
        ctr = deps[0]["spec"]["template"]["spec"]["containers"][0] if deps else {}
        selector = env_map(ctr).get("NAVIGATOR_SELECTOR", {}).get("value", "")
        c.check(bool(selector), f"{path}: a shard must set NAVIGATOR_SELECTOR")
        instances.append((path, nss[0] if nss else None, selector, docs))
    for i, (pa, nsa, sa, da) in enumerate(instances):
        for pb, nsb, sb, db in instances[i + 1:]:
            c.check(nsa != nsb, f"{pa} and {pb} share the namespace {nsa} (and so the Lease)")
            c.check(disjoint(sa, sb), f"{pa} ({sa!r}) and {pb} ({sb!r}): selectors not provably disjoint; "
                                      "a NavigatorToken matching both would be refreshed by both")
            # Same identity in both renders: applying one would overwrite the other's object,
            # which is harmless only for identical cluster-scoped objects (the CRD).
            ids_b = {(group_of(d["apiVersion"]), d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in db}
            for d in da:
                key = (group_of(d["apiVersion"]), d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
                other = ids_b.get(key)
                c.check(other is None or (d["kind"] in CLUSTER_SCOPED and d["kind"] != "Namespace" and other == d),
                        f"{pa} and {pb} both render {ident(d)} (one would overwrite the other)")
    return c


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def check_restricted(c: Checker, where: str, pod: dict) -> None:
    """The Pod Security "restricted" settings the example workloads promise."""
    psc = pod.get("securityContext") or {}
    c.check(psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true")
    c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile must be RuntimeDefault")
    for ctr in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        sc = ctr.get("securityContext") or {}
        name = f"{where}: container {ctr.get('name')}"
        c.check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation must be false")
        c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{name}: capabilities.drop must include ALL")
        c.check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem must be true")


def cmd_examples(args) -> Checker:
    c = Checker()
    objs = load(args.files)
    tokens = [(p, d) for p, d in objs if d.get("kind") == "NavigatorToken"]
    workloads = {(d.get("kind"), (d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name"))
                 for _, d in objs if d.get("kind") in WORKLOAD_KINDS}
    target_secrets = set()
    for path, d in tokens:
        m = d.get("metadata") or {}
        spec = d.get("spec") or {}
        target = spec.get("target") or {}
        target_secrets.add((m.get("namespace"), target.get("secretName") or m.get("name")))
        template = target.get("template") or {}
        data = template.get("data") or {}
        token_keys = {target.get("accessTokenKey") or "token", target.get("idTokenKey"), target.get("expiresAtKey")} - {None}
        for key in data:
            c.check(key not in token_keys, f"{path}: {ident(d)}: template key {key!r} clashes with a token key")
        if template.get("type") == "kubernetes.io/dockerconfigjson":
            c.check(".dockerconfigjson" in data, f"{path}: {ident(d)}: a kubernetes.io/dockerconfigjson Secret needs a .dockerconfigjson key")
        for t in spec.get("rolloutRestartTargets") or []:
            c.check((t.get("kind"), m.get("namespace"), t.get("name")) in workloads,
                    f"{path}: {ident(d)}: rollout target {t.get('kind')}/{t.get('name')} is not among the examples")
    for path, d in objs:
        m = d.get("metadata") or {}
        labels = m.get("labels") or {}
        if d.get("kind") == "Secret":
            k, v = CREDENTIALS_LABEL
            c.check(labels.get(k) == v,
                    f"{path}: {ident(d)}: credentials Secrets need label {k}: \"{v}\" (the operator only watches labelled Secrets)")
            k, v = MANAGED_BY_LABEL
            c.check(labels.get(k) != v, f"{path}: {ident(d)}: must not carry {k}={v} (reserved for target Secrets)")
        if d.get("kind") in WORKLOAD_KINDS:
            pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
            check_restricted(c, f"{path}: {ident(d)}", pod)
            token_volumes = {v.get("name") for v in pod.get("volumes") or []
                             if (m.get("namespace"), (v.get("secret") or {}).get("secretName")) in target_secrets}
            for ctr in pod.get("containers") or []:
                for vm in ctr.get("volumeMounts") or []:
                    c.check(vm.get("name") not in token_volumes or not vm.get("subPath"),
                            f"{path}: {ident(d)}: the token Secret is mounted with subPath, which the kubelet never updates")
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rendered")
    r.add_argument("--mode", choices=("cluster-wide", "namespaced"), required=True)
    r.add_argument("--namespace", default=OPERATOR, help="the operator's namespace")
    r.add_argument("--without-crd", action="store_true", help="cluster-wide, but another instance installs the CRD")
    r.add_argument("--rollout-restart", action="store_true",
                   help="deploy/components/rollout-restart is enabled: expect its permissions too")
    r.add_argument("--monitoring", action="store_true",
                   help="deploy/components/monitoring is enabled: check its objects")
    r.add_argument("--docs", help="docs/operations.md: the metrics table and runbook sections (with --monitoring)")
    r.add_argument("--dockerfile")
    r.add_argument("file")
    sh = sub.add_parser("shards")
    sh.add_argument("files", nargs="+")
    e = sub.add_parser("examples")
    e.add_argument("files", nargs="*")
    args = ap.parse_args()
    c = {"rendered": cmd_rendered, "shards": cmd_shards, "examples": cmd_examples}[args.cmd](args)
    for err in c.errors:
        print(f"error: {err}", file=sys.stderr)
    label = {"rendered": lambda: f"{args.mode} manifests" + (" with rollout-restart" if args.rollout_restart else "")
             + (" with monitoring" if args.monitoring else ""),
             "shards": lambda: "shards", "examples": lambda: "examples"}[args.cmd]()
    print(f"sanity ({label}): {c.count} checks, {len(c.errors)} error(s)")
    return 1 if c.errors else 0


if __name__ == "__main__":
    sys.exit(main())
