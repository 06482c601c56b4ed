#!/usr/bin/env python3
"""Validate custom resources against the openAPIV3Schema of their CRD.

Usage: validate_custom_resources.py --crd crds/navigatortoken.yaml [--crd crds/clusternavigatortoken.yaml] FILE...

Every document in FILE... whose apiVersion group is a CRD's group is validated
against the schema of its kind and version, approximating what the API server does with
`kubectl apply` (field validation "Strict", kubectl's default):

* unknown fields are errors, except under x-kubernetes-preserve-unknown-fields or
  additionalProperties (the server would reject them, not silently prune them);
* `nullable: true` (OpenAPI) admits null;
* x-kubernetes-int-or-string admits an integer or a string;
* apiVersion, kind and metadata are always allowed at the root, and metadata.name /
  metadata.namespace must be valid Kubernetes names;
* CEL rules (x-kubernetes-validations) are NOT evaluated: they are counted and
  reported so that nobody mistakes this for a full server-side check.

Documents of other groups are ignored (kubernetes-validate covers built-in kinds).
The CRD itself is also checked for the contract the operator and deploy/ rely on.
Exit status: 0 if everything validated, 1 otherwise. Needs PyYAML and jsonschema.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys

import jsonschema
import yaml

# The interface deploy/, docs/operations.md and the RBAC rely on, per kind.
CONTRACTS = {
    "NavigatorToken": {
        "group": "navigator.dev",
        "kind": "NavigatorToken",
        "plural": "navigatortokens",
        "shortName": "nvt",
        "scope": "Namespaced",
        "version": "v1alpha1",
    },
    "ClusterNavigatorToken": {
        "group": "navigator.dev",
        "kind": "ClusterNavigatorToken",
        "plural": "clusternavigatortokens",
        "shortName": "cnvt",
        "scope": "Cluster",
        "version": "v1alpha1",
    },
}

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise SystemExit(f"{path}: document {i} is not a mapping")
    return docs


def to_jsonschema(node, cel_rules: list[str], path: str = ""):
    """Translate a Kubernetes structural schema into a strict Draft 4 JSON schema."""
    if isinstance(node, list):
        return [to_jsonschema(x, cel_rules, path) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: to_jsonschema(v, cel_rules, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_jsonschema(value, cel_rules, path + ("[]" if key == "items" else ""))
        elif key == "x-kubernetes-validations":
            cel_rules.extend(f"{path or '<root>'}: {r.get('rule')}" for r in value)
            out[key] = value
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str) and not any(k in out for k in ("allOf", "anyOf", "oneOf", "not")):
            out["type"] = [out["type"], "null"]  # clearer error messages than an anyOf
            if "enum" in out and None not in out["enum"]:
                out["enum"] = list(out["enum"]) + [None]
            return out
        return {"anyOf": [{"type": "null"}, out]}
    return out


def root_schema(crd_schema: dict, cel_rules: list[str]) -> dict:
    schema = to_jsonschema(copy.deepcopy(crd_schema), cel_rules)
    props = schema.setdefault("properties", {})
    # The API server always accepts these at the root; ObjectMeta is checked separately.
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    return schema


def check_contract(crd: dict, errors: list[str]) -> None:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    want = CONTRACTS.get(names.get("kind"))
    if want is None:
        errors.append(f"CRD contract: unknown kind {names.get('kind')!r} (known: {', '.join(CONTRACTS)})")
        return

    def expect(cond: bool, what: str) -> None:
        if not cond:
            errors.append(f"CRD contract: {what}")

    expect(crd.get("apiVersion") == "apiextensions.k8s.io/v1", "apiVersion must be apiextensions.k8s.io/v1")
    expect(spec.get("group") == want["group"], f"spec.group must be {want['group']}")
    expect(names.get("kind") == want["kind"], f"spec.names.kind must be {want['kind']}")
    expect(names.get("plural") == want["plural"], f"spec.names.plural must be {want['plural']}")
    expect(want["shortName"] in (names.get("shortNames") or []), f"spec.names.shortNames must include {want['shortName']}")
    expect(spec.get("scope") == want["scope"], f"spec.scope must be {want['scope']}")
    expect(
        crd.get("metadata", {}).get("name") == f"{want['plural']}.{want['group']}",
        f"metadata.name must be {want['plural']}.{want['group']}",
    )
    versions = {v.get("name"): v for v in spec.get("versions", [])}
    v = versions.get(want["version"])
    expect(v is not None, f"version {want['version']} must exist")
    if v is not None:
        expect(v.get("served") is True, f"version {want['version']} must be served")
        expect(v.get("storage") is True, f"version {want['version']} must be the storage version")
        expect("status" in (v.get("subresources") or {}), f"version {want['version']} must have the status subresource")
        root = v.get("schema", {}).get("openAPIV3Schema")
        expect(isinstance(root, dict), f"version {want['version']} must have an openAPIV3Schema")
        # docs/operations.md argues that a NavigatorToken cannot point the operator at a
        # Secret in another namespace because the spec has no way to name one: keep it so.
        spec_schema = (root or {}).get("properties", {}).get("spec")
        expect(isinstance(spec_schema, dict), "the schema must define spec")
        # A ClusterNavigatorToken names exactly two kinds of namespace: where its credentials
        # are (checked against the operator's allow-list) and where it writes.
        allowed = {".spec.credentialsSecretRef.namespace", ".spec.target.namespaces", ".spec.target.namespaceSelector"}
        for where, node in walk(spec_schema or {}, ".spec"):
            for prop in node.get("properties") or {}:
                if want["scope"] == "Cluster" and f"{where}.{prop}" in allowed:
                    continue
                expect("namespace" not in prop.lower(),
                       f"{where}.{prop}: the spec must not name a namespace (Secrets are looked up in the NavigatorToken's own namespace)")
            expect(not node.get("x-kubernetes-preserve-unknown-fields"),
                   f"{where}: x-kubernetes-preserve-unknown-fields in spec would let arbitrary fields through")


def walk(node, path):
    """Yield (path, schema) for every sub-schema."""
    if not isinstance(node, dict):
        return
    yield path, node
    for k, v in (node.get("properties") or {}).items():
        yield from walk(v, f"{path}.{k}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from walk(node[key], path + ("[]" if key == "items" else ".*"))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key) or []:
            yield from walk(sub, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crd", required=True, action="append", help="path of a CustomResourceDefinition YAML (repeatable)")
    ap.add_argument("files", nargs="*", help="YAML files holding custom resources (other kinds are ignored)")
    args = ap.parse_args()

    errors: list[str] = []
    # (group, kind) -> (namespaced, {apiVersion: validator})
    served: dict[tuple[str, str], tuple[bool, dict[str, jsonschema.Draft4Validator]]] = {}
    cel_rules: list[str] = []
    for crd_path in args.crd:
        crds = [d for d in load_docs(crd_path) if d.get("kind") == "CustomResourceDefinition"]
        if len(crds) != 1:
            print(f"error: {crd_path}: expected exactly one CustomResourceDefinition, found {len(crds)}", file=sys.stderr)
            return 1
        crd = crds[0]
        check_contract(crd, errors)
        spec = crd.get("spec", {})
        group, kind = spec.get("group"), spec.get("names", {}).get("kind")
        validators: dict[str, jsonschema.Draft4Validator] = {}
        for v in spec.get("versions", []):
            if not v.get("served"):
                continue
            schema = root_schema(v.get("schema", {}).get("openAPIV3Schema", {}), cel_rules if v.get("storage") else [])
            try:
                jsonschema.Draft4Validator.check_schema(schema)
            except jsonschema.SchemaError as e:
                errors.append(f"{crd_path}: version {v.get('name')}: schema is not a valid JSON schema: {e.message}")
                continue
            validators[f"{group}/{v['name']}"] = jsonschema.Draft4Validator(
                schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
            )
        served[(group, kind)] = (spec.get("scope") == "Namespaced", validators)
    groups = {group for group, _ in served}

    checked = 0
    for path in args.files:
        for i, doc in enumerate(load_docs(path)):
            api_version = str(doc.get("apiVersion", ""))
            group = api_version.split("/")[0]
            if group not in groups or "/" not in api_version:
                continue
            meta = doc.get("metadata") or {}
            where = f"{path}: {doc.get('kind')}/{meta.get('name', '<no name>')} (document {i})"
            checked += 1
            if (group, doc.get("kind")) not in served:
                kinds = sorted(k for g, k in served if g == group)
                errors.append(f"{where}: kind {doc.get('kind')!r} is not served by the CRDs (only {', '.join(kinds)})")
                continue
            namespaced, validators = served[(group, doc.get("kind"))]
            validator = validators.get(api_version)
            if validator is None:
                errors.append(f"{where}: apiVersion {api_version} is not a served version of the CRD")
                continue
            name = meta.get("name")
            if not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
                errors.append(f"{where}: metadata.name must be a DNS-1123 subdomain, got {name!r}")
            ns = meta.get("namespace")
            if ns is not None and (not namespaced or not isinstance(ns, str) or len(ns) > 63 or not DNS1123_LABEL.match(ns)):
                errors.append(f"{where}: bad metadata.namespace {ns!r}")
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                loc = ".".join(str(p) for p in err.absolute_path) or "<root>"
                errors.append(f"{where}: {loc}: {err.message}")

    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if cel_rules:
        print(f"note: {len(cel_rules)} CEL rule(s) in the CRD are not evaluated offline:")
        for r in cel_rules:
            print(f"note:   {r}")
    print(f"custom resources: {checked} object(s) of {', '.join(sorted(groups))} checked against {', '.join(args.crd)}, {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
