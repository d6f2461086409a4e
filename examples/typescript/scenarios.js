// Test services for the integration tests (crates/test-servers starts this as a process),
// served over h2c on 127.0.0.1:$PORT (default 9080):
//   PORT=9080 SIDE_EFFECT_FILE=/tmp/side-effects.txt node scenarios.js
// All handlers take and return JSON.

const fs = require("node:fs");
const restate = require("@restatedev/restate-sdk");
// Greeter and Counter, the Promise.withResolvers polyfill and the h2c server.
const { greeter, counter, serve } = require("./service.js");

const sideEffectFile = () => process.env.SIDE_EFFECT_FILE ?? "/tmp/side-effects.txt";

// Appends `tag` to the side-effect file inside ctx.run, so a test can count executions.
const appendTag = (ctx, tag) =>
  ctx.run("append", () => {
    fs.appendFileSync(sideEffectFile(), tag + "\n");
    return tag;
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
    // `steps` journaled steps of `ms` each, recording when each began and ended (ms since the
    // epoch): a test can tell whether two executions of the invocation ever ran steps at once.
    steps: async (ctx, { tag, steps, ms }) => {
      for (let i = 0; i < steps; i++) {
        await ctx.run(`step ${i}`, async () => {
          fs.appendFileSync(sideEffectFile(), `${tag} ${i} begin ${Date.now()}\n`);
          await new Promise((resolve) => setTimeout(resolve, ms));
          fs.appendFileSync(sideEffectFile(), `${tag} ${i} end ${Date.now()}\n`);
          return i;
        });
      }
      return steps;
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

const awaiter = restate.service({
  name: "Awaiter",
  handlers: {
    // Records its awakeable's id as a side effect, then waits for someone to complete it.
    awakeable: async (ctx, tag) => {
      const { id, promise } = ctx.awakeable();
      await appendTag(ctx, `awakeable ${tag} ${id}`);
      try {
        const value = await promise;
        await appendTag(ctx, `resolved ${tag} ${value}`);
        return value;
      } catch (e) {
        await appendTag(ctx, `rejected ${tag} ${e.message}`);
        throw e;
      }
    },
    // Completes another invocation's awakeable from a handler.
    resolve: async (ctx, { id, value }) => {
      ctx.resolveAwakeable(id, value);
      return "resolved";
    },
  },
});

// A workflow: `run` waits for the promise "code", which a shared handler completes.
const signup = restate.workflow({
  name: "Signup",
  handlers: {
    run: async (ctx, name) => {
      await appendTag(ctx, `signup ${ctx.key}`);
      ctx.set("status", "waiting");
      const code = await ctx.promise("code");
      ctx.set("status", "done");
      return `welcome ${name} ${code}`;
    },
    submitCode: async (ctx, code) => {
      await ctx.promise("code").resolve(code);
      return "accepted";
    },
    status: async (ctx) => (await ctx.get("status")) ?? "unknown",
  },
});

serve([greeter, counter, sleeper, runner, caller, failing, awaiter, signup]);
