#!/usr/bin/env python3
"""Offline checks that the Helm chart and deploy/ stay one install, run by .ci/helm.sh.

  helm_checks.py --helm PATH [--root DIR]

- drift: for equivalent settings, the objects `helm template` renders from
  deploy/helm/navigator-token-operator/ are the objects `kubectl kustomize` renders from
  deploy/ (the default, the namespaced overlay, each opt-in component in both modes, and each
  monitoring object on its own). Compared object by object, field by field, after taking away
  only what the chart adds on purpose: the Helm labels (HELM_LABELS) and the CRDs'
  helm.sh/resource-policy: keep. deploy/'s Namespace is left out (Helm installs into a
  namespace that exists; docs/operations.md#installing-with-helm says how to create it with
  the same labels, and this checks that the docs' command sets exactly them);
- shared files: the chart's copies of the CRDs, the alert rules and the dashboard are byte for
  byte those of crds/ and deploy/components/monitoring/;
- versions: Chart.yaml `version` is the crate's version (Cargo.toml), `appVersion` the image
  tag of deploy/base/kustomization.yaml;
- docs: the values table of docs/operations.md#installing-with-helm lists exactly the values
  of values.schema.json, with the schema's type and the default of values.yaml;
- self-test: on a scratch copy, the drift check passes unchanged, and fails when deploy/
  changes without the chart, when the chart changes without deploy/, and when crds/ changes
  without the chart's copy.

Standard library only: YAML is turned into JSON by `kubectl label --local -o json` (kubectl's
own decoder, as the API server would read it). Prints one line per check and a closing
`helm_checks.py: N passed, M failed`; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

CHART = "deploy/helm/navigator-token-operator"
RELEASE = "navigator-token-operator"
NAMESPACE = "navigator-token-operator"
# Labels the chart adds to the metadata of what deploy/ renders (not to the pod template, nor to
# selectors for this release name).
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
               "app.kubernetes.io/version")
KEEP = ("helm.sh/resource-policy", "keep")
# (deploy/ or crds/ file, the chart's copy)
SHARED = [
    ("crds/navigatortoken.yaml", f"{CHART}/files/crds/navigatortoken.yaml"),
    ("crds/clusternavigatortoken.yaml", f"{CHART}/files/crds/clusternavigatortoken.yaml"),
    ("deploy/components/monitoring/prometheusrule.yaml", f"{CHART}/files/prometheusrule.yaml"),
    ("deploy/components/monitoring/dashboard.json", f"{CHART}/files/dashboard.json"),
]
NAMESPACED = {"installMode": "Namespaced", "watchNamespaces": ["team-a", "team-b"], "crds": {"enabled": False}}
MONITORING_ALL = {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                                 "grafanaDashboard": {"enabled": True}}}
DASHBOARD = ("ConfigMap", "navigator-token-operator-dashboard")
RULE = ("PrometheusRule", "navigator-token-operator")
MONITOR = ("ServiceMonitor", "navigator-token-operator")


def merged(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# (name, kustomization, components, chart values, kustomize objects (kind, name) left out)
CASES = [
    ("default", "deploy", [], {}, []),
    ("namespaced", "deploy/overlays/namespaced", [], NAMESPACED, []),
    ("rollout-restart", "deploy", ["rollout-restart"], {"rolloutRestart": {"enabled": True}}, []),
    ("namespaced + rollout-restart", "deploy/overlays/namespaced", ["rollout-restart"],
     merged(NAMESPACED, {"rolloutRestart": {"enabled": True}}), []),
    ("monitoring", "deploy", ["monitoring"], MONITORING_ALL, []),
    ("namespaced + monitoring", "deploy/overlays/namespaced", ["monitoring"], merged(NAMESPACED, MONITORING_ALL), []),
    ("serviceMonitor only", "deploy", ["monitoring"], {"monitoring": {"serviceMonitor": {"enabled": True}}},
     [RULE, DASHBOARD]),
    ("prometheusRule only", "deploy", ["monitoring"], {"monitoring": {"prometheusRule": {"enabled": True}}},
     [MONITOR, DASHBOARD]),
    ("grafanaDashboard only", "deploy", ["monitoring"], {"monitoring": {"grafanaDashboard": {"enabled": True}}},
     [MONITOR, RULE]),
    ("rollout-restart + monitoring", "deploy", ["rollout-restart", "monitoring"],
     merged(MONITORING_ALL, {"rolloutRestart": {"enabled": True}}), []),
]


class Failed(Exception):
    pass


def run(cmd: list[str], cwd: str, stdin: str | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True,
                       env={**os.environ, "KUBECONFIG": os.devnull})
    if p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


def objects(yaml_text: str, cwd: str) -> list[dict]:
    """The objects of a YAML stream, decoded by kubectl (no cluster: --local)."""
    if not yaml_text.strip():
        return []
    out = run(["kubectl", "label", "--local", "-f", "-", "-o", "json", "nvt-helm-check-"], cwd, yaml_text)
    decoder, i, objs = json.JSONDecoder(), 0, []
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            break
        obj, i = decoder.raw_decode(out, i)
        objs.extend(obj["items"] if obj.get("kind") == "List" and "items" in obj else [obj])
    return objs


def yaml_value(text: str, cwd: str):
    """A YAML document's value as JSON, wrapped in an object kubectl can decode."""
    wrapped = "apiVersion: checks.navigator.dev/v1\nkind: Value\nmetadata: {name: value}\nvalue:\n"
    wrapped += "".join(f"  {line}\n" for line in text.splitlines())
    return objects(wrapped, cwd)[0].get("value")


def kustomize(root: str, base: str, components: list[str]) -> list[dict]:
    target = base
    if components:
        overlay = os.path.join(root, "target", "helm-checks", "overlays", "-".join([base.replace("/", "_")] + components))
        os.makedirs(overlay, exist_ok=True)
        rel = os.path.relpath(root, overlay)
        with open(os.path.join(overlay, "kustomization.yaml"), "w", encoding="utf-8") as f:
            f.write("# Generated by .ci/helm_checks.py.\napiVersion: kustomize.config.k8s.io/v1beta1\n"
                    "kind: Kustomization\nresources:\n")
            f.write(f"- {rel}/{base}\ncomponents:\n")
            f.writelines(f"- {rel}/deploy/components/{c}\n" for c in components)
        target = os.path.relpath(overlay, root)
    return objects(run(["kubectl", "kustomize", target], root), root)


def helm_template(helm: str, root: str, values: dict, release: str = RELEASE) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(values, f)  # JSON is YAML
    try:
        return run([helm, "template", release, CHART, "--namespace", NAMESPACE, "--values", f.name], root)
    finally:
        os.unlink(f.name)


def key(obj: dict) -> tuple:
    md = obj.get("metadata", {})
    return (obj.get("apiVersion"), obj.get("kind"), md.get("namespace", ""), md.get("name"))


def strip_helm(obj: dict) -> list[str]:
    """Take away what the chart adds on purpose; returns what is missing of it."""
    problems = []
    md = obj.get("metadata", {})
    labels = md.get("labels", {})
    missing = [k for k in HELM_LABELS if k not in labels]
    if missing:
        problems.append(f"{'/'.join(map(str, key(obj)))}: lacks the Helm labels {missing}")
    for k in HELM_LABELS:
        labels.pop(k, None)
    if not labels:
        md.pop("labels", None)
    if obj.get("kind") == "CustomResourceDefinition":
        annotations = md.get("annotations", {})
        if annotations.get(KEEP[0]) != KEEP[1]:
            problems.append(f"CRD {md.get('name')}: lacks {KEEP[0]}: {KEEP[1]}")
        annotations.pop(KEEP[0], None)
        if not annotations:
            md.pop("annotations", None)
    return problems


def differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ (a: kustomize, b: chart), as paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}"
            if k not in b:
                out.append(f"{p}: only in deploy/: {json.dumps(a[k])[:200]}")
            elif k not in a:
                out.append(f"{p}: only in the chart: {json.dumps(b[k])[:200]}")
            else:
                out.extend(differences(a[k], b[k], p))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: deploy/ {json.dumps(a)[:200]} != chart {json.dumps(b)[:200]}"]
    return []


def drift(root: str, helm: str, cases=CASES) -> list[tuple[str, list[str]]]:
    """One (check name, problems) per case."""
    results = []
    for name, base, components, values, left_out in cases:
        problems = []
        try:
            kobjs = [o for o in kustomize(root, base, components)
                     if o["kind"] != "Namespace" and (o["kind"], o["metadata"]["name"]) not in left_out]
            hobjs = objects(helm_template(helm, root, values), root)
        except Failed as e:
            results.append((f"drift: {name}", [str(e)]))
            continue
        for o in hobjs:
            problems.extend(strip_helm(o))
        k = {key(o): o for o in kobjs}
        h = {key(o): o for o in hobjs}
        if len(k) != len(kobjs) or len(h) != len(hobjs):
            problems.append("an object is rendered twice")
        for only, where in ((set(k) - set(h), "deploy/"), (set(h) - set(k), "the chart")):
            problems.extend(f"{'/'.join(map(str, x))}: only in {where}" for x in sorted(only, key=str))
        for x in sorted(set(k) & set(h), key=str):
            problems.extend(f"{x[1]}/{x[3]}: {d}" for d in differences(k[x], h[x]))
        results.append((f"drift: {name} (kustomize {base}{''.join(' + ' + c for c in components)}; "
                        f"chart {json.dumps(values, separators=(',', ':'))})", problems))
    return results


def shared_files(root: str) -> list[str]:
    problems = []
    for ours, copy in SHARED:
        with open(os.path.join(root, ours), "rb") as a, open(os.path.join(root, copy), "rb") as b:
            if a.read() != b.read():
                problems.append(f"{copy} is not a copy of {ours}: cp {ours} {copy}")
    return problems


def chart_field(text: str, field: str) -> str | None:
    m = re.search(rf'^{field}:\s*"?([^"\s]+)"?\s*$', text, re.M)
    return m.group(1) if m else None


def versions(root: str) -> list[str]:
    problems = []
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        crate = tomllib.load(f)["package"]["version"]
    with open(os.path.join(root, CHART, "Chart.yaml"), encoding="utf-8") as f:
        chart = f.read()
    with open(os.path.join(root, "deploy/base/kustomization.yaml"), encoding="utf-8") as f:
        tag = re.search(r"^\s*newTag:\s*\"?([^\"\s]+)", f.read(), re.M)
    if chart_field(chart, "version") != crate:
        problems.append(f"Chart.yaml version {chart_field(chart, 'version')} is not the crate's {crate} (Cargo.toml)")
    if not tag or chart_field(chart, "appVersion") != tag.group(1):
        problems.append(f"Chart.yaml appVersion {chart_field(chart, 'appVersion')} is not the image tag "
                        f"{tag.group(1) if tag else None} of deploy/base/kustomization.yaml")
    return problems


def schema_leaves(schema: dict, node: dict, path: str = "") -> dict[str, dict]:
    """Documented values: chart-defined objects are opened, everything else is one row."""
    out = {}
    for name, sub in node.get("properties", {}).items():
        p = f"{path}.{name}" if path else name
        if "properties" in sub and "$ref" not in sub:
            out.update(schema_leaves(schema, sub, p))
        else:
            if "$ref" in sub:
                sub = {**schema["definitions"][sub["$ref"].rsplit("/", 1)[1]], **sub}
            out[p] = sub
    return out


def schema_type(sub: dict) -> str:
    if "type" in sub:
        return sub["type"]
    return "/".join(sorted({alt["type"] for alt in sub.get("anyOf", [])}))


def default_of(values: dict, path: str):
    for part in path.split("."):
        values = values[part]
    return values


SEE_VALUES = "see `values.yaml`"


def values_table(root: str) -> tuple[dict[str, list[str]], list[str]]:
    with open(os.path.join(root, "docs/operations.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^### Helm values\n(.*?)(?=^#)", text, re.M | re.S)
    if not m:
        return {}, ["docs/operations.md has no section `### Helm values`"]
    rows, problems = {}, []
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 4 or set(cells[0]) <= set("- ") or cells[0] == "Value":
            continue
        name = cells[0].strip("`")
        if name in rows:
            problems.append(f"values table: `{name}` twice")
        rows[name] = cells
    return rows, problems


def docs(root: str) -> list[str]:
    with open(os.path.join(root, CHART, "values.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    with open(os.path.join(root, CHART, "values.yaml"), encoding="utf-8") as f:
        values = yaml_value(f.read(), root)
    leaves = schema_leaves(schema, schema)
    rows, problems = values_table(root)
    for name in sorted(set(leaves) - set(rows)):
        problems.append(f"values table: `{name}` (in values.schema.json) is missing")
    for name in sorted(set(rows) - set(leaves)):
        problems.append(f"values table: `{name}` is not a value of values.schema.json")
    for name in sorted(set(rows) & set(leaves)):
        _, typ, default = rows[name][:3]
        if typ != schema_type(leaves[name]):
            problems.append(f"values table: `{name}` has type {typ}, the schema says {schema_type(leaves[name])}")
        try:
            value = default_of(values, name)
        except (KeyError, TypeError):
            problems.append(f"values table: `{name}` is not in values.yaml")
            continue
        want = SEE_VALUES if isinstance(value, (dict, list)) and value else f"`{json.dumps(value, separators=(',', ':'))}`"
        if default != want:
            problems.append(f"values table: `{name}` has default {default}, values.yaml says {want}")
    return problems


def namespace_labels(root: str) -> list[str]:
    """The docs create the release namespace with the labels of deploy/base/namespace.yaml."""
    with open(os.path.join(root, "deploy/base/namespace.yaml"), encoding="utf-8") as f:
        ns = objects(f.read(), root)[0]
    want = {k: v for k, v in ns["metadata"]["labels"].items() if k.startswith("pod-security.kubernetes.io/")}
    problems = []
    for doc in ("docs/operations.md", "README.md"):
        with open(os.path.join(root, doc), encoding="utf-8") as f:
            lines = f.read().splitlines()
        commands = []
        for i, line in enumerate(lines):
            if "kubectl label namespace navigator-token-operator" in line:
                command = line
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + lines[i]
                commands.append(command)
        if not commands:
            problems.append(f"{doc}: no `kubectl label namespace navigator-token-operator ...`")
        for command in commands:
            got = dict(re.findall(r"(pod-security\.kubernetes\.io/[a-z-]+)=([a-z0-9.]+)", command))
            if got != want:
                problems.append(f"{doc}: labels the namespace {got}, deploy/base/namespace.yaml has {want}")
    return problems


def scratch_copy(root: str) -> str:
    tmp = tempfile.mkdtemp(prefix="nvt-helm-checks.")
    for d in ("deploy", "crds"):
        shutil.copytree(os.path.join(root, d), os.path.join(tmp, d))
    return tmp


def replace_in(path: str, old: str, new: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if old not in text:
        raise Failed(f"self-test: {old!r} not found in {path}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new, 1))


def self_test(root: str, helm: str) -> list[tuple[str, list[str]]]:
    """The drift check fails when one install path changes without the other."""
    default = [c for c in CASES if c[0] == "default"]
    mutations = [
        ("unchanged", None, None, None, None),
        ("deploy/ changed without the chart", "deploy/base/deployment.yaml",
         "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds"),
        ("the chart changed without deploy/", f"{CHART}/templates/clusterrole.yaml",
         'resources: ["namespaces"]\n  verbs: ["list", "watch"]',
         'resources: ["namespaces"]\n  verbs: ["get", "list", "watch"]', "ClusterRole/navigator-token-operator"),
        ("crds/ changed without the chart's copy", "crds/navigatortoken.yaml",
         "description: Organization (GUID) the token is issued for.",
         "description: Organization (GUID) the token is issued for, changed.", "files/crds/navigatortoken.yaml"),
    ]
    results = []
    for name, path, old, new, expected in mutations:
        tmp = scratch_copy(root)
        try:
            if path:
                replace_in(os.path.join(tmp, path), old, new)
            problems = [p for _, ps in drift(tmp, helm, default) for p in ps] + shared_files(tmp)
            if path is None:
                results.append((f"self-test: the drift check passes on an unchanged copy", problems))
            elif not problems:
                results.append((f"self-test: the drift check fails when {name}", ["it passed"]))
            elif not any(expected in p for p in problems):
                results.append((f"self-test: the drift check fails when {name}",
                                [f"it failed, but without naming {expected!r}:"] + problems))
            else:
                first = next(p for p in problems if expected in p)
                results.append((f"self-test: the drift check fails when {name} ({first[:160]})", []))
        except Failed as e:
            results.append((f"self-test: {name}", [str(e)]))
        finally:
            shutil.rmtree(tmp)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--helm", required=True)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = ap.parse_args()
    root, helm = os.path.abspath(args.root), os.path.abspath(args.helm)
    results = [("shared files are byte copies", shared_files(root)),
               ("chart version follows the crate, appVersion the image tag", versions(root))]
    for name, fn in (("values table in docs/operations.md matches values.schema.json and values.yaml", docs),
                     ("the docs label the release namespace as deploy/base/namespace.yaml", namespace_labels)):
        try:
            results.append((name, fn(root)))
        except Failed as e:
            results.append((name, [str(e)]))
    results += drift(root, helm)
    results += self_test(root, helm)
    passed = failed = 0
    for name, problems in results:
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for p in problems[:40]:
                print(f"     {p}")
            if len(problems) > 40:
                print(f"     ... and {len(problems) - 40} more")
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"helm_checks.py: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
