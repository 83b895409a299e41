// Builds a JavaScript corral agent: `node build.mjs <agent-dir> <out.wasm> [--with clocks,random]`.
//
// esbuild inlines `<agent-dir>/agent.js` and the SDK (plugin-sdk/js) into one
// ES module, and componentize-js turns that module into a component of the
// world `agent` in wit/since_v0.2.0.

import { mkdtemp, rm, writeFile, mkdir, readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// CORRAL_WIT and CORRAL_SDK let a project made by `corral new agent --lang js`
// (which vendors both) reuse this script.
const witPath = resolve(process.env.CORRAL_WIT ?? resolve(here, "../../wit/since_v0.2.0"));
const sdkEntry = resolve(process.env.CORRAL_SDK ?? resolve(here, "../../plugin-sdk/js/index.js"));

// Engine features an agent may ask for with `--with`; off by default, so the
// component imports neither wasi:random nor wasi:clocks/monotonic-clock and
// `Math.random()` replays one build-time sequence on every call, keeping
// agents deterministic. (`Date.now()` works either way.) stdio stays on:
// console output and engine error reports go to the host's log capture.
// `http` gives the agent `fetch` over wasi:http (contract 0.2.0): the host
// sends only what the grants allow. An agent directory may list the
// features it needs in a `features` file (`http`, one per line).
const OPTIONAL = ["clocks", "random", "http"];
// Never wanted: `run` is not a fetch handler.
const ALWAYS_OFF = ["fetch-event"];

function usage(message) {
  console.error(`error: ${message}`);
  console.error("usage: node build.mjs <agent-dir> <out.wasm> [--with clocks,random]");
  process.exit(2);
}

const args = process.argv.slice(2);
let enabled = [];
const withAt = args.indexOf("--with");
if (withAt !== -1) {
  enabled = (args[withAt + 1] ?? "").split(",").filter(Boolean);
  const unknown = enabled.filter((f) => !OPTIONAL.includes(f));
  if (unknown.length || enabled.length === 0) usage(`--with takes a comma list of ${OPTIONAL.join(", ")}`);
  args.splice(withAt, 2);
}
if (args.length !== 2) usage("expected an agent directory and an output path");

// An agent directory is looked up from the current directory, then beside this script.
const agentDir = [resolve(args[0]), resolve(here, args[0])].find((d) => existsSync(join(d, "agent.js"))) ?? resolve(args[0]);
const outPath = resolve(args[1]);
const entry = join(agentDir, "agent.js");
if (!existsSync(entry)) usage(`${entry} does not exist`);
const featuresFile = join(agentDir, "features");
if (existsSync(featuresFile)) {
  const listed = (await readFile(featuresFile, "utf8")).split(/\s+/).filter(Boolean);
  const unknown = listed.filter((f) => !OPTIONAL.includes(f));
  if (unknown.length) usage(`${featuresFile} lists unknown features ${unknown.join(", ")}; known: ${OPTIONAL.join(", ")}`);
  enabled = [...new Set([...enabled, ...listed])];
}

// Imported lazily so a missing node_modules gets a clear message, not a stack trace.
let esbuild, componentize;
try {
  esbuild = await import("esbuild");
  ({ componentize } = await import("@bytecodealliance/componentize-js"));
} catch (e) {
  if (e?.code !== "ERR_MODULE_NOT_FOUND") throw e;
  console.error(`error: the build tools are not installed: run \`npm ci\` in ${here}`);
  process.exit(1);
}

const bundle = await esbuild.build({
  entryPoints: [entry],
  bundle: true,
  format: "esm",
  platform: "neutral",
  write: false,
  alias: { "corral-sdk": sdkEntry },
  // The host interface is provided by componentize-js's bindings, not a file.
  external: ["corral:*"],
  logLevel: "warning",
});

// componentize-js reads its source from a file; give it a private directory.
const work = await mkdtemp(join(tmpdir(), "corral-js-"));
let component;
try {
  const sourcePath = join(work, "agent.js");
  await writeFile(sourcePath, bundle.outputFiles[0].contents);
  ({ component } = await componentize({
    sourcePath,
    witPath,
    worldName: "agent",
    disableFeatures: [...ALWAYS_OFF, ...OPTIONAL.filter((f) => !enabled.includes(f))],
  }));
} catch (e) {
  // Its message already says what failed (a syntax error, a throw at top level, a WIT mismatch).
  console.error(`error: componentize-js failed for ${entry}:\n${e.message}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
if (!component) process.exit(1);
await mkdir(dirname(outPath), { recursive: true });
await writeFile(outPath, component);
console.log(`${outPath}: ${(component.length / 1e6).toFixed(1)} MB`);
