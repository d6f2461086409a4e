// Test services for the integration tests (crates/test-servers starts this as a process),
// served over h2c on 127.0.0.1:$PORT (default 9080):
//   PORT=9080 SIDE_EFFECT_FILE=/tmp/side-effects.txt node scenarios.js
// All handlers take and return JSON.

// Node 20 lacks Promise.withResolvers, which the SDK uses.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
  };
}

const fs = require("node:fs");
const http2 = require("node:http2");
const restate = require("@restatedev/restate-sdk");

const sideEffectFile = () => process.env.SIDE_EFFECT_FILE ?? "/tmp/side-effects.txt";

// Appends `tag` to the side-effect file inside ctx.run, so a test can count executions.
const appendTag = (ctx, tag) =>
  ctx.run("append", () => {
    fs.appendFileSync(sideEffectFile(), tag + "\n");
    return tag;
  });

const greeter = restate.service({
  name: "Greeter",
  handlers: {
    greet: async (ctx, name) => `Hello ${name}!`,
  },
});

const counter = restate.object({
  name: "Counter",
  handlers: {
    add: async (ctx, delta) => {
      const total = ((await ctx.get("total")) ?? 0) + delta;
      ctx.set("total", total);
      return total;
    },
    get: restate.handlers.object.shared(async (ctx) => (await ctx.get("total")) ?? 0),
    reset: async (ctx) => {
      ctx.clearAll();
    },
    keys: restate.handlers.object.shared(async (ctx) => await ctx.stateKeys()),
  },
});

const sleeper = restate.service({
  name: "Sleeper",
  handlers: {
    sleep: async (ctx, ms) => {
      await ctx.sleep(ms);
      return "slept";
    },
  },
});

const runner = restate.service({
  name: "Runner",
  handlers: {
    sideEffect: async (ctx, tag) => {
      await appendTag(ctx, tag);
      return `ran ${tag}`;
    },
    sleepThenEffect: async (ctx, { tag, ms }) => {
      await appendTag(ctx, tag);
      await ctx.sleep(ms);
      await appendTag(ctx, `${tag}:done`);
      return tag;
    },
  },
});

const caller = restate.service({
  name: "Caller",
  handlers: {
    callGreet: async (ctx, name) => {
      const result = await ctx.serviceClient(greeter).greet(name);
      return `called: ${result}`;
    },
    sendAdd: async (ctx, { key, delta }) => {
      ctx.objectSendClient(counter, key).add(delta);
      return "sent";
    },
    callAdd: async (ctx, { key, delta }) => await ctx.objectClient(counter, key).add(delta),
  },
});

// Attempts per key, in this process only (reset when the process restarts).
const attempts = new Map();

const failing = restate.service({
  name: "Failing",
  handlers: {
    terminal: async (ctx, msg) => {
      throw new restate.TerminalError(msg, { errorCode: 400 });
    },
    failTwice: async (ctx, key) => {
      const n = (attempts.get(key) ?? 0) + 1;
      attempts.set(key, n);
      if (n <= 2) {
        throw new Error(`attempt ${n} failed`);
      }
      return `succeeded after ${n} attempts`;
    },
  },
});

const port = Number(process.env.PORT ?? 9080);
http2
  .createServer(
    restate.createEndpointHandler({
      services: [greeter, counter, sleeper, runner, caller, failing],
    }),
  )
  .listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
