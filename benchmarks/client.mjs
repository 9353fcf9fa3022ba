// Load generator for benchmarks/run.py: one Node.js process, the `ws` package.
//
// Usage: node client.mjs '<json config>'   (run.py starts it; it is not meant for hands)
//
// It talks to run.py through lines of JSON on stdout and one-word commands on stdin, so
// that run.py can read the server's CPU time and memory at the exact moments a
// measurement starts and ends, while the load keeps running:
//
//   load modes (pingpong, pipelined, churn), one long window (see "Window mode" below
//   for the alternating windows run.py uses by default):
//     -> {"event":"ready"}        connected (and warmed up)
//     -> {"event":"start"}        measuring from now
//     -> {"event":"end", ...}     measured; the load goes on until "stop"
//     <- stop                     stop the load, close, exit
//   idle mode:
//     -> {"event":"ready"}        one warm-up connection done; nothing is open
//     <- go                       open N connections
//     -> {"event":"opened", ...}  all open (or failed); idle
//     <- go                       one echo to every connection, `rounds` times
//     -> {"event":"echoed", ...}
//     <- close                    (optional) close every connection properly
//     -> {"event":"closed", ...}
//     <- stop                     exit
//
// Per-message work is kept small so that the client is not the bottleneck: payloads are
// encoded once, received data is never decoded, compression is off (hypercorn always
// accepts permessage-deflate when offered, and the ws package offers it by default) and
// UTF-8 validation of the echoes is skipped. The client's own CPU time is reported, so a
// run where it did become the bottleneck shows it.

import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { WebSocket } from "ws";

const config = JSON.parse(process.argv[2]);

// -- Talking to run.py -------------------------------------------------------------------

const pendingLines = [];
const lineWaiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const waiter = lineWaiters.shift();
  if (waiter) waiter(line.trim());
  else pendingLines.push(line.trim());
});

function nextCommand() {
  if (pendingLines.length) return Promise.resolve(pendingLines.shift());
  return new Promise((resolve) => lineWaiters.push(resolve));
}

async function expect(word) {
  const line = await nextCommand();
  if (line !== word) throw new Error(`expected ${JSON.stringify(word)} from run.py, got ${JSON.stringify(line)}`);
}

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

// -- Messages and connections ------------------------------------------------------------

function payloadOf(size, binary) {
  // Printable ASCII, so that a text message is valid UTF-8 of exactly `size` bytes.
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = 97 + (i % 26);
  return { data, options: { binary, compress: false } };
}

const CONNECT_OPTIONS = {
  perMessageDeflate: false,
  skipUTF8Validation: true,
  handshakeTimeout: 60_000,
  maxPayload: 64 * 1024 * 1024,
};

function connect(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, CONNECT_OPTIONS);
    const onError = (err) => {
      ws.removeListener("open", onOpen);
      reject(err);
    };
    const onOpen = () => {
      ws.removeListener("error", onError);
      ws.on("error", () => {}); // a later error shows up as a close; counted there
      resolve(ws);
    };
    ws.once("open", onOpen);
    ws.once("error", onError);
  });
}

function closeAndWait(ws, timeoutMs = 5000) {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve(true);
    const timer = setTimeout(() => {
      ws.terminate();
      resolve(false);
    }, timeoutMs);
    ws.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
    if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  });
}

// Latencies in milliseconds, kept only while measuring.
class Samples {
  constructor() {
    this.values = new Float64Array(1 << 16);
    this.count = 0;
  }
  add(value) {
    if (this.count === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.count++] = value;
  }
  summary() {
    const sorted = this.values.slice(0, this.count).sort();
    const at = (q) => (this.count ? sorted[Math.min(this.count - 1, Math.floor(q * this.count))] : null);
    let sum = 0;
    for (let i = 0; i < this.count; i++) sum += sorted[i];
    return {
      samples: this.count,
      p50_ms: at(0.5),
      p99_ms: at(0.99),
      mean_ms: this.count ? sum / this.count : null,
      max_ms: this.count ? sorted[this.count - 1] : null,
    };
  }
}

// -- Load modes: ping-pong and pipelined echo ----------------------------------------------

// One connection that keeps `depth` messages in flight and sends the next as each echo
// comes back (depth 1 is ping-pong). Echoes come back in order, so send times are a FIFO.
class EchoLoop {
  constructor(ws, payload, depth, state) {
    this.ws = ws;
    this.payload = payload;
    this.depth = depth;
    this.state = state;
    this.sentAt = new Float64Array(depth);
    this.head = 0;
    this.inFlight = 0;
    this.idle = null;
    ws.on("message", () => this.onEcho());
    ws.on("close", () => {
      if (this.state.running) this.state.lost += 1;
      this.inFlight = 0;
      this.finish();
    });
  }
  start() {
    for (let i = 0; i < this.depth; i++) this.sendOne();
  }
  sendOne() {
    this.sentAt[(this.head + this.inFlight) % this.depth] = performance.now();
    this.inFlight += 1;
    this.ws.send(this.payload.data, this.payload.options);
  }
  onEcho() {
    const now = performance.now();
    const sent = this.sentAt[this.head];
    this.head = (this.head + 1) % this.depth;
    this.inFlight -= 1;
    const state = this.state;
    if (state.measuring) {
      state.messages += 1;
      state.latencies.add(now - sent);
    }
    if (state.running) this.sendOne();
    else this.finish();
  }
  drained() {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle = resolve;
    });
  }
  finish() {
    if (this.inFlight === 0 && this.idle) {
      const resolve = this.idle;
      this.idle = null;
      resolve();
    }
  }
}

async function measureWindow(state, durationS) {
  state.messages = 0;
  state.latencies = new Samples();
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  state.measuring = true;
  emit("start");
  await sleep(durationS * 1000);
  state.measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const clientCpu = cpuSeconds() - cpu0;
  return { seconds, client_cpu_s: clientCpu, messages: state.messages, ...state.latencies.summary() };
}

async function runEcho() {
  const url = config.url;
  const payload = payloadOf(config.size, config.binary);
  const connections = await Promise.all(Array.from({ length: config.connections }, () => connect(url)));
  const state = { running: true, measuring: false, messages: 0, lost: 0, latencies: new Samples() };
  const loops = connections.map((ws) => new EchoLoop(ws, payload, config.depth, state));
  emit("ready");
  for (const loop of loops) loop.start();
  await sleep(config.warmup * 1000);
  const result = await measureWindow(state, config.duration);
  emit("end", { ...result, lost: state.lost });
  await expect("stop");
  state.running = false;
  await Promise.race([Promise.all(loops.map((loop) => loop.drained())), sleep(10_000)]);
  await Promise.all(connections.map((ws) => closeAndWait(ws)));
}

// Window mode ("windows": true): the load runs only between "run" and "pause", so that
// run.py can measure several servers in short alternating windows (paired in time, so
// that a machine that gets busier or quieter affects them alike).
//     -> {"event":"ready"}       connected and warmed up; no load
//     <- run                     start the load
//     <- pause                   stop sending, wait for every echo
//     -> {"event":"paused", ...} what that window measured
//     ... run/pause again, or:
//     <- stop                    close, exit
async function windows(startLoad, stopLoad) {
  for (;;) {
    const command = await nextCommand();
    if (command === "stop") return;
    if (command !== "run") throw new Error(`expected "run" or "stop", got ${JSON.stringify(command)}`);
    const cpu0 = cpuSeconds();
    const t0 = performance.now();
    const state = startLoad();
    await expect("pause");
    await stopLoad();
    emit("paused", {
      seconds: (performance.now() - t0) / 1000,
      client_cpu_s: cpuSeconds() - cpu0,
      messages: state.messages,
      failures: state.failures || 0,
      ...state.latencies.summary(),
    });
  }
}

async function runEchoWindows() {
  const payload = payloadOf(config.size, config.binary);
  const connections = await Promise.all(Array.from({ length: config.connections }, () => connect(config.url)));
  const state = { running: false, measuring: true, messages: 0, lost: 0, latencies: new Samples() };
  const loops = connections.map((ws) => new EchoLoop(ws, payload, config.depth, state));
  const start = () => {
    state.running = true;
    state.messages = 0;
    state.latencies = new Samples();
    for (const loop of loops) loop.start();
    return state;
  };
  const stop = async () => {
    state.running = false;
    await Promise.race([Promise.all(loops.map((loop) => loop.drained())), sleep(10_000)]);
  };
  start();
  await sleep(config.warmup * 1000);
  await stop();
  emit("ready");
  await windows(start, stop);
  await Promise.all(connections.map((ws) => closeAndWait(ws)));
}

// -- Load mode: connection churn (open, one echo, close) ----------------------------------

function echoOnce(ws, payload) {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error("closed before the echo"));
    ws.once("message", () => {
      ws.removeListener("close", onClose);
      resolve();
    });
    ws.once("close", onClose);
    ws.send(payload.data, payload.options);
  });
}

async function churnWorker(state, payload) {
  while (state.running) {
    const t0 = performance.now();
    try {
      const ws = await connect(config.url);
      await echoOnce(ws, payload);
      const clean = await closeAndWait(ws);
      if (!clean) throw new Error("close timed out");
    } catch {
      if (state.measuring) state.failures += 1;
      await sleep(10); // do not spin if the server refuses
      continue;
    }
    if (state.measuring) {
      state.cycles += 1;
      state.messages = state.cycles;
      state.latencies.add(performance.now() - t0);
    }
  }
}

async function runChurnWindows() {
  const payload = payloadOf(config.size, config.binary);
  let state = null;
  let workers = [];
  const start = () => {
    state = { running: true, measuring: true, cycles: 0, messages: 0, failures: 0, latencies: new Samples() };
    workers = Array.from({ length: config.connections }, () => churnWorker(state, payload));
    return state;
  };
  const stop = async () => {
    state.running = false;
    await Promise.race([Promise.all(workers), sleep(10_000)]);
  };
  start();
  await sleep(config.warmup * 1000);
  await stop();
  emit("ready");
  await windows(start, stop);
}

async function runChurn() {
  const payload = payloadOf(config.size, config.binary);
  const state = { running: true, measuring: false, cycles: 0, failures: 0, latencies: new Samples() };
  const worker = () => churnWorker(state, payload);
  emit("ready");
  const workers = Array.from({ length: config.connections }, worker);
  await sleep(config.warmup * 1000);
  state.latencies = new Samples();
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  state.measuring = true;
  emit("start");
  await sleep(config.duration * 1000);
  state.measuring = false;
  emit("end", {
    seconds: (performance.now() - t0) / 1000,
    client_cpu_s: cpuSeconds() - cpu0,
    messages: state.cycles,
    failures: state.failures,
    ...state.latencies.summary(),
  });
  await expect("stop");
  state.running = false;
  await Promise.race([Promise.all(workers), sleep(10_000)]);
}

// -- Idle mode: hold N connections, then check that every one still answers ---------------

async function runIdle() {
  const url = config.url;
  const payload = payloadOf(config.size, config.binary);
  const total = config.connections;
  {
    // Warm the server's code paths before its memory is read as the baseline.
    const ws = await connect(url);
    for (let i = 0; i < 20; i++) await echoOnce(ws, payload);
    await closeAndWait(ws);
  }
  emit("ready");
  await expect("go");

  const opened = [];
  let failed = 0;
  let next = 0;
  let closedEarly = 0;
  let answered = 0;
  let waitingFor = 0;
  let roundDone = null;
  const onMessage = () => {
    answered += 1;
    if (answered === waitingFor && roundDone) roundDone();
  };
  // The time at which every tenth of the connections was open: the accept rate as the
  // server's heap grows.
  const step = Math.max(1, Math.floor(total / 10));
  const marks = [];
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  async function opener() {
    while (next < total) {
      next += 1;
      try {
        const ws = await connect(url);
        ws.on("message", onMessage);
        ws.on("close", () => {
          closedEarly += 1;
        });
        opened.push(ws);
      } catch {
        failed += 1;
      }
      const done = opened.length + failed;
      if (done % step === 0) marks.push({ done, t_s: (performance.now() - t0) / 1000 });
    }
  }
  await Promise.all(Array.from({ length: Math.min(config.concurrency, total) }, opener));
  const openSeconds = (performance.now() - t0) / 1000;
  const windows = [];
  for (let i = 0; i < marks.length; i++) {
    const prev = i ? marks[i - 1] : { done: 0, t_s: 0 };
    windows.push(Math.round((marks[i].done - prev.done) / (marks[i].t_s - prev.t_s)));
  }
  emit("opened", {
    opened: opened.length,
    failed,
    seconds: openSeconds,
    rate: opened.length / openSeconds,
    window_rates: windows,
    client_cpu_s: cpuSeconds() - cpu0,
  });
  await expect("go");

  const rounds = [];
  for (let r = 0; r < config.rounds; r++) {
    answered = 0;
    const live = opened.filter((ws) => ws.readyState === WebSocket.OPEN);
    waitingFor = live.length;
    const start = performance.now();
    const done = new Promise((resolve) => {
      roundDone = resolve;
    });
    for (const ws of live) ws.send(payload.data, payload.options);
    const timedOut = await Promise.race([done.then(() => false), sleep(config.round_timeout * 1000).then(() => true)]);
    rounds.push({ seconds: (performance.now() - start) / 1000, sent: live.length, answered, timed_out: timedOut });
  }
  emit("echoed", { rounds, closed_early: closedEarly });
  let command = await nextCommand();
  if (command === "close") {
    // Close every connection properly (close frame both ways), all at once.
    const start = performance.now();
    const clean = await Promise.all(opened.map((ws) => closeAndWait(ws, 60_000)));
    emit("closed", { closed: clean.filter(Boolean).length, seconds: (performance.now() - start) / 1000 });
    command = await nextCommand();
  }
  if (command !== "stop") throw new Error(`expected "stop" from run.py, got ${JSON.stringify(command)}`);
  for (const ws of opened) ws.terminate();
}

// -- Main ----------------------------------------------------------------------------------

const modes = config.windows
  ? { pingpong: runEchoWindows, pipelined: runEchoWindows, churn: runChurnWindows }
  : { pingpong: runEcho, pipelined: runEcho, churn: runChurn, idle: runIdle };

try {
  await modes[config.mode]();
  process.exit(0);
} catch (err) {
  emit("error", { message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}
