// Writes dashboard.schema.json: the JSON Schema of the `Dashboard` type of Grafana's dashboard
// kind (schema v0, the classic JSON model with `schemaVersion`) as @grafana/schema publishes it,
// converted by ts-json-schema-generator. Run with `npm ci && npm run generate`; `npm run check`
// fails if the committed file differs from what the pinned packages produce.
//
// The one change to the converter's output is OPEN_IN_THE_KIND below (see the README).

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const { createGenerator } = require("ts-json-schema-generator");

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dashboard.schema.json");
const TYPES = "@grafana/schema/dist/esm/raw/dashboard/x/dashboard_types.gen.d.ts";

// Objects that Grafana's CUE source of the kind (kinds/dashboard/dashboard_kind.cue) ends with
// `...`: they take datasource-specific fields that cuetsy drops when it writes the TypeScript.
// Every other object keeps `additionalProperties: false`, so a misspelt field is refused.
const OPEN_IN_THE_KIND = {
  AnnotationQuery: "datasources that have not moved to `target` spread their query here (Prometheus: expr, step, titleFormat, tagKeys, textFormat, useValueForTime)",
  AnnotationTarget: "a datasource puts its own query here",
  VariableModel: "variable kinds add their own fields (a query variable's `definition`, for one)",
};

function version(pkg) {
  return JSON.parse(readFileSync(require.resolve(`${pkg}/package.json`), "utf8")).version;
}

const schema = createGenerator({
  path: require.resolve(TYPES),
  type: "Dashboard",
  expose: "export",
  topRef: true,
  jsDoc: "extended",
  sortProps: true,
  additionalProperties: false,
  skipTypeCheck: false,
}).createSchema("Dashboard");

for (const [name, why] of Object.entries(OPEN_IN_THE_KIND)) {
  const def = schema.definitions?.[name];
  if (!def || def.additionalProperties !== false) {
    throw new Error(`${name}: expected a closed object in the generated schema; recheck OPEN_IN_THE_KIND`);
  }
  delete def.additionalProperties;
  def.$comment = `Open, as in Grafana's dashboard kind: ${why}.`;
}

const grafana = version("@grafana/schema");
const generator = version("ts-json-schema-generator");
const document = {
  $comment:
    `Generated from the Dashboard type of @grafana/schema ${grafana} (${TYPES.replace("@grafana/schema/", "")}) ` +
    `by ts-json-schema-generator ${generator} with deploy/grafana/schema/generate.mjs. Do not edit: regenerate.`,
  ...schema,
};
const text = JSON.stringify(document, null, 2) + "\n";

if (process.argv.includes("--check")) {
  if (readFileSync(out, "utf8") !== text) {
    console.error(`${out} is not what @grafana/schema ${grafana} produces: run npm run generate`);
    process.exit(1);
  }
  console.log(`${out} is up to date (@grafana/schema ${grafana}, ts-json-schema-generator ${generator})`);
} else {
  writeFileSync(out, text);
  console.log(`wrote ${out} (@grafana/schema ${grafana}, ts-json-schema-generator ${generator})`);
}
