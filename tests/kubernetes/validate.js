// Schema check of rendered Kubernetes manifests: every object of each YAML
// stream given is validated against the Kubernetes API's OpenAPI schema
// (kubernetes-models) or the Prometheus Operator's CRDs
// (@kubernetes-models/prometheus-operator). An object of a kind neither
// package knows fails too, as does unparsable YAML.
//
//   node validate.js FILE...     (- reads stdin)
//   node validate.js --self-test (a broken manifest must be rejected)
"use strict";
const fs = require("fs");
const yaml = require("js-yaml");

function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates =
    group === "monitoring.coreos.com"
      ? [`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`]
      : [`kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`];
  for (const path of candidates) {
    try {
      return require(path)[kind];
    } catch (e) {
      if (e.code !== "MODULE_NOT_FOUND" && e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    }
  }
  return null;
}

// Returns the errors of one YAML stream, each naming the object.
function check(text, source) {
  const errors = [];
  let docs;
  try {
    docs = yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
  } catch (e) {
    return { count: 0, errors: [`${source}: YAML: ${e.message}`] };
  }
  for (const doc of docs) {
    const name = `${source}: ${doc.kind}/${doc.metadata && doc.metadata.name}`;
    const Model = modelFor(String(doc.apiVersion), String(doc.kind));
    if (!Model) {
      errors.push(`${name}: no schema for apiVersion ${doc.apiVersion}, kind ${doc.kind}`);
      continue;
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      errors.push(`${name}: ${e.message}`);
    }
  }
  return { count: docs.length, errors };
}

function selfTest() {
  const broken = `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: broken}
spec:
  replicas: "one"
  serviceName: x
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
          ports: [{containerPort: "grpc"}]
---
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: broken}
spec:
  podMetricsEndpoints: [{interval: 15}]
---
apiVersion: example.com/v1
kind: Unknown
metadata: {name: broken}
`;
  const { errors } = check(broken, "self-test");
  const expected = ["StatefulSet/broken", "PodMonitor/broken", "Unknown/broken"];
  const missed = expected.filter((what) => !errors.some((e) => e.includes(what)));
  if (missed.length > 0) {
    console.error(`validate: self-test: not rejected: ${missed.join(", ")}`);
    process.exit(1);
  }
  console.log(`validate: self-test: the ${expected.length} broken objects were rejected`);
}

if (process.argv[2] === "--self-test") {
  selfTest();
} else {
  let failed = false;
  for (const file of process.argv.slice(2)) {
    const text = fs.readFileSync(file === "-" ? 0 : file, "utf8");
    const { count, errors } = check(text, file);
    for (const e of errors) console.error(e);
    if (errors.length > 0 || count === 0) failed = true;
    console.log(`${file}: ${count} objects, ${errors.length} invalid`);
  }
  process.exit(failed ? 1 : 0);
}
