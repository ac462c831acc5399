// The benchmark's two workloads as a Restate service: every step is a
// journaled `ctx.run` of a no-op, the cheapest durable step Restate has.
// Run by bench/peers/run.sh; the port comes from PORT (default 9080).
import "./polyfill.ts";
import * as restate from "@restatedev/restate-sdk";

const noop = async <T>(value: T): Promise<T> => value;

const bench = restate.service({
  name: "bench",
  handlers: {
    // Ten steps, one after another.
    sequence: async (ctx: restate.Context, input: { n: number }) => {
      let value: unknown = input;
      for (let i = 0; i < 10; i++) {
        value = await ctx.run(`s${i}`, () => noop(value));
      }
      return value;
    },
    // A root step, ten branches at once, then a join.
    fanOut: async (ctx: restate.Context, input: { n: number }) => {
      const root = await ctx.run("root", () => noop(input));
      const branches = await restate.RestatePromise.all(
        Array.from({ length: 10 }, (_, i) => ctx.run(`b${i}`, () => noop(root))),
      );
      return await ctx.run("join", () => noop(branches.length));
    },
  },
});

const port = Number(process.env.PORT ?? 9080);
await restate.serve({ services: [bench], port });
// Exit at once on SIGTERM: a service that lingers stalls the next run.
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
