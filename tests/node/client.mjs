// A corral client in Node.js, written from docs/resources.md and docs/schema/ alone,
// with the official @nats-io packages. It needs a provisioned server, a bot serving the
// queue `default` (kinds `sum` and `fail`) and a running ledger.
//
//   node tests/node/client.mjs nats://127.0.0.1:4222
//
// One line per step, "ok <step>: ..." or "FAIL <step>: ...". Exit status 1 if any step failed.
import { randomUUID } from "node:crypto";
import { connect, headers, NoRespondersError, RequestError } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";

const url = process.argv[2] ?? "nats://127.0.0.1:4222";
const enc = new TextEncoder();
const dec = new TextDecoder();
let failures = 0;

async function step(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok ${name}: ${detail ?? ""}`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL ${name}: ${err?.message ?? err}`);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Poll `probe` until it returns something other than null/undefined, or fail after `seconds`.
async function poll(what, probe, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value !== null && value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A request nobody is subscribed to yet: nats.js raises NoRespondersError, or a RequestError caused by one.
const noResponders = (err) => err instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders());

// A job id: 32 hex characters (docs: 1-128 of A-Z a-z 0-9 _ -).
const newId = () => randomUUID().replaceAll("-", "");

// docs/schema/job.json: `kind` and `id` required; queue/priority must match the subject.
function makeJob(kind, args, extra = {}) {
  return { id: newId(), kind, args, queue: "default", priority: "normal", created_at: Date.now() / 1000, ...extra };
}

const nc = await connect({ servers: url, name: "corral-node-client" });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
const lastFor = (stream, subject) => jsm.direct.getMessage(stream, { last_by_subj: subject });

const ok = makeJob("sum", { a: 20, b: 22 });
const doomed = makeJob("fail", { message: "from node" }, { max_attempts: 1 });
const doomedBytes = enc.encode(JSON.stringify(doomed));

await step("submit", async () => {
  for (const [job, data] of [[ok, enc.encode(JSON.stringify(ok))], [doomed, doomedBytes]]) {
    const ack = await js.publish(`corral.jobs.${job.queue}.${job.priority}`, data, {
      msgID: job.id,
      expect: { streamName: "CORRAL_JOBS" },
    });
    check(ack.stream === "CORRAL_JOBS" && !ack.duplicate, `unexpected ack ${JSON.stringify(ack)}`);
  }
  return `${ok.id} and ${doomed.id} accepted by CORRAL_JOBS`;
});

await step("duplicate submit is one job", async () => {
  const ack = await js.publish("corral.jobs.default.normal", enc.encode(JSON.stringify(ok)), { msgID: ok.id });
  check(ack.duplicate === true, "a second publish with the same Nats-Msg-Id was stored again");
  return "same Nats-Msg-Id reported as duplicate";
});

await step("read result", async () => {
  // docs/resources.md: one result per job, on corral.results.<job_id>.<bot>; the last message under
  // corral.results.<job_id>.* is it, whichever bot wrote it.
  const msg = await poll("the result", () => lastFor("CORRAL_RESULTS", `corral.results.${ok.id}.*`));
  const result = msg.json();
  check(msg.subject === `corral.results.${ok.id}.${result.bot}`, `the subject ${msg.subject} does not name the writer ${result.bot}`);
  for (const key of ["job_id", "kind", "queue", "bot", "incarnation", "attempt", "started_at", "finished_at", "value"]) {
    check(key in result, `result has no ${key}: ${JSON.stringify(result)}`);
  }
  check(result.job_id === ok.id && result.value === 42, `wrong result ${JSON.stringify(result)}`);
  check(result.attempt === 1 && result.finished_at >= result.started_at, "attempt or times are off");
  return `value ${result.value} from bot ${result.bot}, attempt ${result.attempt}`;
});

await step("result fence", async () => {
  // docs/resources.md, "Writing a result": the headers that admit the first result of a job, from any bot.
  const jobId = newId();
  const fenced = (bot) => {
    const h = headers();
    h.set("Nats-Expected-Last-Subject-Sequence", "0");
    h.set("Nats-Expected-Last-Subject-Sequence-Subject", `corral.results.${jobId}.*`);
    const body = { job_id: jobId, kind: "sum", queue: "default", bot, incarnation: "node", attempt: 1, started_at: 1, finished_at: 2, value: bot };
    return js.publish(`corral.results.${jobId}.${bot}`, enc.encode(JSON.stringify(body)), { headers: h });
  };
  const first = await fenced("node-a");
  check(first.stream === "CORRAL_RESULTS", `unexpected ack ${JSON.stringify(first)}`);
  let code = null;
  try {
    await fenced("node-b");
  } catch (err) {
    code = err?.api_error?.err_code ?? err?.code;
  }
  check(code === 10071, `a second writer was not refused with 10071 (got ${code})`);
  const stored = (await lastFor("CORRAL_RESULTS", `corral.results.${jobId}.*`)).json();
  check(stored.bot === "node-a", `the stored result is ${JSON.stringify(stored)}`);
  return "first writer stored, second refused with 10071";
});

await step("read events", async () => {
  // A first delivery's success writes no event (its result is the record: docs/jobs.md, "The audit
  // trail"), so the trail to read is the failing job's: its failure, then its dead letter.
  const types = await poll("failed and dead events", async () => {
    const events = [];
    try {
      const iter = await jsm.direct.getBatch("CORRAL_EVENTS", { seq: 1, next_by_subj: `corral.events.job.${doomed.id}`, batch: 100 });
      for await (const m of iter) events.push(m.json());
    } catch (err) {
      // No event on the subject yet: the server answers 404 "message not found". Poll again.
      if (!String(err && err.message).includes("message not found")) throw err;
      return null;
    }
    return events.some((e) => e.type === "failed") && events.some((e) => e.type === "dead") ? events : null;
  });
  const failed = types.find((e) => e.type === "failed");
  check(typeof failed.ts === "number" && failed.attempt === 1, `failed event lacks ts/attempt: ${JSON.stringify(failed)}`);
  check(types.every((e) => e.job_id === doomed.id), "an event names another job");
  return types.map((e) => e.type).join(", ");
});

await step("read dead letter", async () => {
  const msg = await poll("the dead letter", () => lastFor("CORRAL_DLQ", `corral.dlq.default.${doomed.id}`));
  const reason = msg.header.get("Corral-Reason");
  check(reason && reason.includes("from node"), `reason header is ${JSON.stringify(reason)}`);
  check(msg.header.get("Corral-Job-Id") === doomed.id, "Corral-Job-Id differs");
  check(msg.header.get("Corral-Source-Subject") === "corral.jobs.default.normal", "Corral-Source-Subject differs");
  check(Number(msg.header.get("Corral-Attempts")) === 1, "Corral-Attempts is not 1");
  check(Buffer.from(msg.data).equals(Buffer.from(doomedBytes)), "the body is not the original bytes");
  return `reason "${reason}", original ${msg.data.length} bytes intact`;
});

let liveBots = [];
await step("list live bots", async () => {
  const kv = await new Kvm(nc).open("corral_bots");
  const bots = liveBots;
  for await (const key of await kv.keys()) {
    const entry = await kv.get(key);
    if (entry && entry.operation === "PUT" && entry.value.length > 0) bots.push(entry.json());
  }
  check(bots.length > 0, "no live bot in corral_bots");
  for (const b of bots) {
    check(typeof b.name === "string" && typeof b.heartbeat_at === "number", `bad heartbeat ${JSON.stringify(b)}`);
    check(Array.isArray(b.current) && Array.isArray(b.queues), `heartbeat lacks current/queues: ${JSON.stringify(b)}`);
  }
  return bots.map((b) => `${b.name} (${b.state}, ${b.current.length} running)`).join(", ");
});

await step("ping a bot", async () => {
  const name = liveBots[0].name;
  const reply = (await nc.request(`corral.control.bot.${name}`, JSON.stringify({ action: "ping" }), { timeout: 5000 })).json();
  check(reply.ok === true && typeof reply.incarnation === "string", `bad ping reply ${JSON.stringify(reply)}`);
  return `${name} is ${reply.state}`;
});

let querySubject;
await step("find the ledger service", async () => {
  const client = new Svcm(nc).client();
  // The ledger may not have registered yet (it opens DuckDB first): until it does, the
  // server answers the discovery request with "no responders", which means "not yet".
  const infos = await poll("the corral-ledger service", async () => {
    const found = [];
    try {
      for await (const info of await client.info("corral-ledger")) found.push(info);
    } catch (err) {
      if (!noResponders(err)) throw err;
    }
    return found.length ? found : null;
  });
  const endpoint = infos[0].endpoints.find((e) => e.name === "query");
  check(endpoint, `no query endpoint in ${JSON.stringify(infos[0])}`);
  querySubject = endpoint.subject;
  return `${infos[0].name} ${infos[0].version}, query on ${querySubject}`;
});

await step("query the ledger", async () => {
  const ask = async (sql) => nc.request(querySubject, JSON.stringify({ sql, max_rows: 10 }), { timeout: 10000 });
  const reply = await poll("the job in the ledger", async () => {
    const m = await ask(`SELECT job_id, value, finished_at FROM results WHERE job_id = '${ok.id}'`);
    const body = m.json();
    return !m.headers?.get("Nats-Service-Error") && body.rows.length ? body : null;
  });
  check(reply.columns.join() === "job_id,value,finished_at", `columns ${reply.columns}`);
  const [jobId, value] = reply.rows[0];
  check(jobId === ok.id && typeof value === "string" && JSON.parse(value) === 42, `row ${JSON.stringify(reply.rows[0])}`);
  const bad = await ask("SELEKT nonsense");
  check(bad.headers?.get("Nats-Service-Error-Code") === "400", "bad SQL did not answer code 400");
  check(bad.json().code === "400" && bad.json().error, `error body ${dec.decode(bad.data)}`);
  return `row ${JSON.stringify(reply.rows[0])}; bad SQL refused with code 400`;
});

await nc.close();
console.log(failures ? `${failures} step(s) failed` : "all steps passed");
process.exit(failures ? 1 : 0);
