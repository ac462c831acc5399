// Calls a handler of the bench service through Restate's ingress, keeping a
// fixed number of requests in flight, and prints one JSON line of figures.
// Usage: tsx load.ts HANDLER EXECUTIONS IN_FLIGHT [STEPS_PER_EXECUTION]
import { cpus, loadavg } from "node:os";

const [handler, total, inFlight, steps] = [
  process.argv[2] ?? "sequence",
  Number(process.argv[3] ?? 1000),
  Number(process.argv[4] ?? 64),
  Number(process.argv[5] ?? 10),
];
const ingress = process.env.RESTATE_INGRESS ?? "http://127.0.0.1:8080";

async function call(n: number): Promise<number> {
  const t = performance.now();
  const response = await fetch(`${ingress}/bench/${handler}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ n }),
  });
  if (!response.ok) {
    throw new Error(`${handler} ${n}: HTTP ${response.status} ${await response.text()}`);
  }
  await response.arrayBuffer();
  return performance.now() - t;
}

async function run(count: number, offset: number): Promise<number[]> {
  let next = 0;
  const latencies: number[] = [];
  const lane = async () => {
    while (next < count) {
      const i = next++;
      latencies.push(await call(offset + i));
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, lane));
  return latencies;
}

// Warm up connections and the service's code paths first.
await run(Math.min(100, total), 1_000_000_000);
const loadBefore = loadavg()[0];
const start = performance.now();
const latencies = await run(total, 0);
const seconds = (performance.now() - start) / 1000;
latencies.sort((a, b) => a - b);
const rank = (p: number) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil(p * latencies.length) - 1))];
console.log(
  JSON.stringify({
    system: "restate",
    // The server's default: its local log is RocksDB with a synced WAL.
    durability: "RocksDB WAL, fsync on (rocksdb-disable-wal-fsync = false, the default)",
    workload: handler === "sequence" ? "sequence-10" : "fan-out-10",
    executions: total,
    in_flight: inFlight,
    steps_per_execution: steps,
    seconds,
    executions_per_s: total / seconds,
    steps_per_s: (total * steps) / seconds,
    latency_ms: { p50: rank(0.5), p99: rank(0.99) },
    load_before: loadBefore,
    load_after: loadavg()[0],
    cores: cpus().length,
  }),
);
