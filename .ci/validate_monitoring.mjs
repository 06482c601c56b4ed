// Validates ServiceMonitor and PrometheusRule objects (monitoring.coreos.com/v1) against
// the schemas published in the npm package @kubernetes-models/prometheus-operator: JSON
// schema validators generated from the prometheus-operator API types (types, required
// fields, enums and patterns such as the duration format of `for:`; they do not reject
// unknown fields, so .ci/check_manifests.py checks the keys of rules and endpoints).
//
//   node .ci/validate_monitoring.mjs NODE_DIR OBJECTS.json
//
// NODE_DIR holds node_modules/ (npm ci of .ci/prometheus-operator-schemas/, done by
// .ci/validate-manifests.sh into target/ci-node). OBJECTS.json is a list of
// {"where": "...", "doc": {...}}. Any other kind of monitoring.coreos.com is an error.
// Exit status 0 if all are valid, 1 otherwise.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [nodeDir, objectsFile] = process.argv.slice(2);
if (!nodeDir || !objectsFile) {
  console.error("usage: validate_monitoring.mjs NODE_DIR OBJECTS.json");
  process.exit(2);
}
const pkg = resolve(nodeDir, "node_modules/@kubernetes-models/prometheus-operator");
const version = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version;
const models = await import(pathToFileURL(join(pkg, "monitoring.coreos.com/v1/index.js")).href);
const kinds = { ServiceMonitor: models.ServiceMonitor, PrometheusRule: models.PrometheusRule };

const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
let errors = 0;
const counts = {};
for (const { where, doc } of objects) {
  const Model = doc.apiVersion === "monitoring.coreos.com/v1" ? kinds[doc.kind] : undefined;
  if (!Model) {
    console.error(`error: ${where}: ${doc.apiVersion} ${doc.kind} has no schema here (only monitoring.coreos.com/v1 ${Object.keys(kinds).join(", ")})`);
    errors++;
    continue;
  }
  try {
    new Model(doc).validate();
    counts[doc.kind] = (counts[doc.kind] ?? 0) + 1;
  } catch (e) {
    console.error(`error: ${where}: ${e.message}`);
    errors++;
  }
}
const summary = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "nothing";
console.log(`monitoring objects: ${summary} valid against @kubernetes-models/prometheus-operator ${version}, ${errors} error(s)`);
process.exit(errors ? 1 : 0);
