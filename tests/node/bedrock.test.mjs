// aws-sdk-js-v3 (@aws-sdk/client-bedrock-runtime) as a client of bedrock-relay, run with
// `node --test tests/node`. Starts the real binary (BEDROCK_RELAY_BIN, default
// target/debug/bedrock-relay) as a faulty simulator, a clean simulator and the relay, all on
// 127.0.0.1, and checks that a ConverseStream broken on its first attempt reaches the client
// whole and identical to a direct run against the clean simulator.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { promisify } from "node:util";
import { BedrockRuntimeClient, ConverseStreamCommand } from "@aws-sdk/client-bedrock-runtime";
import { NodeHttpHandler } from "@smithy/node-http-handler";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.BEDROCK_RELAY_BIN ?? path.join(ROOT, "target", "debug", "bedrock-relay");
const RELAY = { accessKeyId: "AKIDRELAYEXAMPLE", secretAccessKey: "relay-secret-key-for-tests" };
const CLIENT = { accessKeyId: "AKIDCLIENTEXAMPLE", secretAccessKey: "client-secret-that-bedrock-would-reject" };
const MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const procs = [];
let sim, cleanSim, relay;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("AWS_") && !k.startsWith("BEDROCK_RELAY_")) env[k] = v;
  }
  return { ...env, ...extra };
}

async function waitFor(url, ms = 20000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${url} did not come up`);
}

async function start(args, env, probe) {
  const p = spawn(BIN, args, { env, stdio: ["ignore", "ignore", "inherit"] });
  procs.push(p);
  await waitFor(probe);
}

async function startSim(...extra) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  await start(["sim", "--listen", `127.0.0.1:${port}`, ...extra], cleanEnv(), `${url}/_sim/log`);
  return url;
}

async function addFaults(rules) {
  const r = await fetch(`${sim}/_sim/faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(rules),
  });
  assert.equal(r.status, 200);
}

async function simLog(tag) {
  const entries = await (await fetch(`${sim}/_sim/log`)).json();
  return entries.filter((e) => e.tag === tag);
}

/** ConverseStream events as plain JSON, metadata (usage is summed over attempts) left out. */
async function converseEvents(client, text) {
  const out = await client.send(
    new ConverseStreamCommand({ modelId: MODEL, messages: [{ role: "user", content: [{ text }] }] }),
  );
  const events = [];
  for await (const ev of out.stream) {
    const [kind] = Object.keys(ev).filter((k) => ev[k] !== undefined);
    if (kind !== "metadata") events.push(JSON.stringify(ev));
  }
  return events;
}

/** The SDK's default handler for this service is HTTP/2 (h2c on an http:// endpoint, which the
 * relay serves); `http1` picks the HTTP/1.1 handler (the simulator speaks only HTTP/1.1). */
function client(endpoint, { http1 = false } = {}) {
  const requestHandler = http1 ? new NodeHttpHandler() : undefined;
  return new BedrockRuntimeClient({ region: "us-east-1", endpoint, credentials: CLIENT, maxAttempts: 1, requestHandler });
}

const reference = (text) => converseEvents(client(cleanSim, { http1: true }), text);

before(async () => {
  sim = await startSim("--access-key-id", RELAY.accessKeyId, "--secret-access-key", RELAY.secretAccessKey);
  cleanSim = await startSim();
  const [port, admin] = [await freePort(), await freePort()];
  relay = `http://127.0.0.1:${port}`;
  const env = cleanEnv({
    AWS_ACCESS_KEY_ID: RELAY.accessKeyId,
    AWS_SECRET_ACCESS_KEY: RELAY.secretAccessKey,
    AWS_REGION: "us-east-1",
    BEDROCK_RELAY_BACKOFF_BASE: "1ms",
    BEDROCK_RELAY_BACKOFF_MAX: "5ms",
    BEDROCK_RELAY_LOG_LEVEL: "warn",
  });
  await start(
    ["serve", "--listen", `127.0.0.1:${port}`, "--admin-listen", `127.0.0.1:${admin}`, "--upstream", sim],
    env,
    `http://127.0.0.1:${admin}/healthz`,
  );
});

after(() => {
  for (const p of procs) p.kill("SIGTERM");
});

for (const http1 of [false, true]) {
  test(`endpoint option over ${http1 ? "HTTP/1.1" : "HTTP/2 (h2c)"}: a ConverseStream reset mid-stream arrives whole`, async () => {
    const tag = `node-endpoint-h${http1 ? 1 : 2}`;
    const text = `Write about estuaries sim:len=60 sim:tag=${tag}`;
    await addFaults([{ tag, attempts: [1], kind: "reset_after_events", events: 8 }]);
    const got = await converseEvents(client(relay, { http1 }), text);
    const want = await reference(text);
    assert.ok(want.length > 20, `a real stream: ${want.length} events`);
    assert.deepEqual(got, want);
    const entries = await simLog(tag);
    assert.equal(entries.length, 2);
    assert.match(entries[0].fault ?? "", /reset_after_events/);
  });
}

// The unmodified-application case: no code change, only AWS_ENDPOINT_URL_BEDROCK_RUNTIME.
const APP = `
import { BedrockRuntimeClient, ConverseStreamCommand } from "@aws-sdk/client-bedrock-runtime";
import { NodeHttpHandler } from "@smithy/node-http-handler";
const c = new BedrockRuntimeClient({ maxAttempts: 1 });
const out = await c.send(new ConverseStreamCommand({ modelId: process.argv[1],
  messages: [{ role: "user", content: [{ text: process.argv[2] }] }] }));
let text = "";
for await (const ev of out.stream) text += ev.contentBlockDelta?.delta?.text ?? "";
process.stdout.write(text);
`;

test("AWS_ENDPOINT_URL_BEDROCK_RUNTIME: an unmodified application is healed too", async () => {
  const tag = "node-env";
  const text = `Write about tides sim:len=60 sim:tag=${tag}`;
  await addFaults([{ tag, attempts: [1], kind: "truncate", events: 12 }]);
  const env = cleanEnv({
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME: relay,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: CLIENT.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CLIENT.secretAccessKey,
  });
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--input-type=module", "-e", APP, MODEL, text],
    { env, cwd: path.dirname(fileURLToPath(import.meta.url)), timeout: 60000 },
  );
  const want = (await reference(text)).map((e) => JSON.parse(e).contentBlockDelta?.delta?.text ?? "").join("");
  assert.ok(want.length > 100);
  assert.equal(stdout, want);
  assert.equal((await simLog(tag)).length, 2);
});
