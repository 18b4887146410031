// Field-name check of rendered Kubernetes manifests: kubernetes-models'
// schemas (validate.js) accept properties they do not define, so a
// misspelt field (`imagePullPolicyy`, `targetPortt`) would pass them. Its
// TypeScript declarations do not: each object is written into a
// TypeScript file as a literal of its kind's interface (IStatefulSet,
// IPodMonitor, ...) and type-checked with tsc, which rejects any property
// the interface lacks (and wrong types).
//
//   node fields.js FILE...     (exit 1 on any error, printed by tsc)
//   node fields.js --self-test (a misspelt field must be rejected)
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync } = require("child_process");
const yaml = require("js-yaml");

function moduleFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  return group === "monitoring.coreos.com"
    ? `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`
    : `kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`;
}

// Type-checks the objects of `texts` ({name: yaml}); returns tsc's output
// ("" when clean).
function check(texts) {
  const lines = [];
  let n = 0;
  for (const [name, text] of Object.entries(texts)) {
    for (const doc of yaml.loadAll(text)) {
      if (!doc) continue;
      const id = `o${n++}`;
      lines.push(`// ${name}: ${doc.kind}/${doc.metadata && doc.metadata.name}`);
      lines.push(`import { I${doc.kind} as T${id} } from "${moduleFor(doc.apiVersion, doc.kind)}";`);
      lines.push(`export const ${id}: T${id} = ${JSON.stringify(doc, null, 2)};`);
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "consent-fields-"));
  const file = path.join(dir, "manifests.ts");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  fs.writeFileSync(
    path.join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, module: "commonjs", moduleResolution: "node",
        target: "es2019", skipLibCheck: true, baseUrl: __dirname,
        typeRoots: [], types: [],
        paths: { "*": [path.join(__dirname, "node_modules", "*")] },
      },
      files: [file],
    }),
  );
  try {
    execFileSync(path.join(__dirname, "node_modules", ".bin", "tsc"), ["-p", dir], {
      encoding: "utf8",
    });
    return { count: n, errors: "" };
  } catch (e) {
    return { count: n, errors: `${e.stdout || ""}${e.stderr || ""}\n(objects in ${file})` };
  } finally {
    if (!process.env.KEEP_FIELDS_CHECK) fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--self-test") {
  const broken = `
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: [{port: 80, targetPortt: 8080}]
`;
  const { errors } = check({ "self-test": broken });
  if (!errors.includes("targetPortt")) {
    console.error(`fields: self-test: the misspelt field was not rejected\n${errors}`);
    process.exit(1);
  }
  console.log("fields: self-test: the misspelt field targetPortt was rejected");
} else {
  const texts = {};
  for (const file of process.argv.slice(2)) texts[file] = fs.readFileSync(file, "utf8");
  const { count, errors } = check(texts);
  if (errors) {
    console.error(errors);
    process.exit(1);
  }
  console.log(`fields: ${count} objects, every field known to its kind's API`);
}
