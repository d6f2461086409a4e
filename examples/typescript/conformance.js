#!/usr/bin/env node
// Services for the SDK conformance scenarios (tests/cluster/sdk_conformance.rs), modelled on
// what the upstream conformance suite (restatedev/e2e `sdk-tests`) checks: state, timers,
// terminal errors and retries, cancel and kill of call trees, proxying and fan-out,
// non-determinism, call ordering, promise combinators, large payloads, attach/output.
// Every name starts with `Conf`, so they never clash with scenarios.js. Served over h2c:
//   PORT=0 node conformance.js      # prints `listening on 127.0.0.1:<port>`
// Handlers take and return JSON unless said otherwise.

const restate = require("@restatedev/restate-sdk");
// The Promise.withResolvers polyfill and the h2c server.
const { serve } = require("./service.js");

const { TerminalError, RestatePromise, TimeoutError, InvocationIdParser } = restate;

// ---------------------------------------------------------------------------------------------
// State: a counter object, a map object, a list object.

const COUNT = "count";

const confCounter = restate.object({
  name: "ConfCounter",
  handlers: {
    get: restate.handlers.object.shared(async (ctx) => (await ctx.get(COUNT)) ?? 0),
    // Answers the value before and after, so a test can see each add exactly once.
    add: async (ctx, delta) => {
      const before = (await ctx.get(COUNT)) ?? 0;
      ctx.set(COUNT, before + delta);
      return { oldValue: before, newValue: before + delta };
    },
    reset: async (ctx) => {
      ctx.clear(COUNT);
    },
    // The write is kept although the handler then fails (the error names the key).
    addThenFail: async (ctx, delta) => {
      const before = (await ctx.get(COUNT)) ?? 0;
      ctx.set(COUNT, before + delta);
      throw new TerminalError(ctx.key);
    },
  },
});

const confMap = restate.object({
  name: "ConfMap",
  handlers: {
    set: async (ctx, { key, value }) => {
      ctx.set(key, value);
    },
    // "" for a missing entry.
    get: restate.handlers.object.shared(async (ctx, key) => (await ctx.get(key)) ?? ""),
    keys: restate.handlers.object.shared(async (ctx) => (await ctx.stateKeys()).sort()),
    // Removes every entry and answers what was there.
    clearAll: async (ctx) => {
      const removed = [];
      for (const key of await ctx.stateKeys()) {
        const value = await ctx.get(key);
        if (value !== null && value !== undefined) {
          removed.push({ key, value });
        }
      }
      ctx.clearAll();
      return removed;
    },
  },
});

const ITEMS = "items";

const confList = restate.object({
  name: "ConfList",
  handlers: {
    append: async (ctx, item) => {
      const items = (await ctx.get(ITEMS)) ?? [];
      ctx.set(ITEMS, [...items, item]);
    },
    get: restate.handlers.object.shared(async (ctx) => (await ctx.get(ITEMS)) ?? []),
    // Empties the list and answers what it held.
    clear: async (ctx) => {
      const items = (await ctx.get(ITEMS)) ?? [];
      ctx.clear(ITEMS);
      return items;
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Utilities: echoes (JSON, raw bytes, headers), cancel and named signals by invocation id.

const confUtils = restate.service({
  name: "ConfUtils",
  handlers: {
    echo: async (ctx, value) => value,
    uppercaseEcho: async (ctx, text) => String(text).toUpperCase(),
    // Bytes in, the same bytes out (application/octet-stream both ways).
    rawEcho: restate.handlers.handler(
      { input: restate.serde.binary, output: restate.serde.binary },
      async (ctx, bytes) => bytes
    ),
    echoHeaders: async (ctx) => Object.fromEntries(ctx.request().headers.entries()),
    // Cancels another invocation from a handler (the SendSignal command, signal 1).
    cancelInvocation: async (ctx, invocationId) => {
      ctx.invocation(InvocationIdParser.fromString(invocationId)).cancel();
    },
    // Named signals of another invocation (SendSignal with a name).
    resolveSignal: async (ctx, { invocationId, signalName, value }) => {
      ctx.invocation(InvocationIdParser.fromString(invocationId)).signal(signalName).resolve(value);
    },
    rejectSignal: async (ctx, { invocationId, signalName, reason }) => {
      ctx.invocation(InvocationIdParser.fromString(invocationId)).signal(signalName).reject(reason);
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Proxy: forwards raw bytes (JSON arrays of numbers) to any target; fan-out with manyCalls.
//   request = {serviceName, virtualObjectKey?, handlerName, message: [bytes], delayMillis?,
//              idempotencyKey?}

const forwardCall = (ctx, request) =>
  ctx.genericCall({
    service: request.serviceName,
    method: request.handlerName,
    key: request.virtualObjectKey ?? undefined,
    parameter: Uint8Array.from(request.message),
    inputSerde: restate.serde.binary,
    outputSerde: restate.serde.binary,
    idempotencyKey: request.idempotencyKey ?? undefined,
  });

const forwardSend = (ctx, request) =>
  ctx.genericSend({
    service: request.serviceName,
    method: request.handlerName,
    key: request.virtualObjectKey ?? undefined,
    parameter: Uint8Array.from(request.message),
    inputSerde: restate.serde.binary,
    delay: request.delayMillis ? { milliseconds: request.delayMillis } : undefined,
    idempotencyKey: request.idempotencyKey ?? undefined,
  });

const confProxy = restate.service({
  name: "ConfProxy",
  handlers: {
    // The callee's answer, as an array of byte values.
    call: async (ctx, request) => Array.from(await forwardCall(ctx, request)),
    // The id of the invocation it started.
    oneWayCall: async (ctx, request) => await forwardSend(ctx, request).invocationId,
    // calls = [{proxyRequest, oneWayCall, awaitAtTheEnd}]: sends are issued in order, calls are
    // issued in order too and awaited after the last one was issued when awaitAtTheEnd is set.
    // Sends `count` one-way calls to keys `${prefix}-${i % keys}` without waiting for anything:
    // as large a fan-out as one handler makes (the scale tests). `blocker`: ConfBlocker.run
    // (each waits for its awakeable), else ConfCounter.add(1).
    fanOut: async (ctx, { prefix, count, keys, blocker }) => {
      for (let i = 0; i < count; i++) {
        const key = `${prefix}-${i % keys}`;
        if (blocker) {
          ctx.objectSendClient(confBlocker, key).run();
        } else {
          ctx.objectSendClient(confCounter, key).add(1);
        }
      }
    },
    manyCalls: async (ctx, calls) => {
      const pending = [];
      for (const { proxyRequest, oneWayCall, awaitAtTheEnd } of calls) {
        if (oneWayCall) {
          await forwardSend(ctx, proxyRequest).invocationId;
        } else {
          const answer = forwardCall(ctx, proxyRequest);
          if (awaitAtTheEnd) {
            pending.push(answer);
          }
        }
      }
      for (const answer of pending) {
        await answer;
      }
    },
  },
});

// ---------------------------------------------------------------------------------------------
// User errors: terminal errors with a code and metadata, from the handler, a callee or ctx.run;
// retryable errors until the 4th attempt.
//   failure = {errorMessage, code?, metadata?}

const SUCCESS_ATTEMPT = 4;
// Attempts per object key, in this process only.
const attemptsByKey = new Map();

const terminal = ({ errorMessage, code, metadata }) =>
  new TerminalError(errorMessage, { errorCode: code ?? 500, metadata: metadata ?? undefined });

const confFailing = restate.object({
  name: "ConfFailing",
  handlers: {
    terminallyFailingCall: async (ctx, failure) => {
      throw terminal(failure);
    },
    // The callee's terminal error fails this handler with the same message.
    callTerminallyFailingCall: async (ctx, failure) => {
      await ctx.objectClient(confFailing, ctx.rand.uuidv4()).terminallyFailingCall(failure);
      throw new TerminalError("the callee was supposed to fail");
    },
    terminallyFailingSideEffect: async (ctx, failure) => {
      await ctx.run("fails terminally", () => {
        throw terminal(failure);
      });
      throw new TerminalError("the side effect was supposed to fail");
    },
    // Throws a retryable error on attempts 1-3 and answers 4 on the 4th.
    failingCallWithEventualSuccess: async (ctx) => {
      const attempt = (attemptsByKey.get(ctx.key) ?? 0) + 1;
      attemptsByKey.set(ctx.key, attempt);
      if (attempt < SUCCESS_ATTEMPT) {
        throw new Error(`failed at attempt ${attempt}`);
      }
      return attempt;
    },
  },
});

// ---------------------------------------------------------------------------------------------
// A holder of one awakeable id per key: the sync point of the cancel and kill scenarios.

const HELD = "awakeable";

const confAwakeableHolder = restate.object({
  name: "ConfAwakeableHolder",
  handlers: {
    hold: async (ctx, id) => {
      ctx.set(HELD, id);
    },
    hasAwakeable: async (ctx) => (await ctx.get(HELD)) != null,
    unlock: async (ctx, value) => {
      const id = await ctx.get(HELD);
      if (id == null) {
        throw new TerminalError("no awakeable is held", { errorCode: 412 });
      }
      ctx.resolveAwakeable(id, value);
      ctx.clear(HELD);
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Cancellation: a runner calls a blocking object which then blocks on a call, a sleep or an
// awakeable. Cancelling the runner must reach the blocking object (its lock is released) and
// the runner sees the 409 of its call and records it.
//   operation = "CALL" | "SLEEP" | "AWAKEABLE"

const confCancelBlocking = restate.object({
  name: "ConfCancelBlocking",
  handlers: {
    block: async (ctx, operation) => {
      const { id, promise } = ctx.awakeable();
      await ctx.objectClient(confAwakeableHolder, ctx.key).hold(id);
      await promise;
      if (operation === "CALL") {
        // The same key: queued behind this very invocation, so it never runs.
        await ctx.objectClient(confCancelBlocking, ctx.key).block(operation);
      } else if (operation === "SLEEP") {
        await ctx.sleep(1_000_000_000);
      } else {
        await ctx.awakeable().promise;
      }
    },
    // Answers once no exclusive handler holds the key.
    isUnlocked: async () => true,
  },
});

const confCancelRunner = restate.object({
  name: "ConfCancelRunner",
  handlers: {
    startTest: async (ctx, operation) => {
      try {
        await ctx.objectClient(confCancelBlocking, ctx.key).block(operation);
      } catch (e) {
        if (e instanceof TerminalError && e.code === 409) {
          ctx.set("canceled", true);
          return;
        }
        throw e;
      }
    },
    verifyTest: async (ctx) => (await ctx.get("canceled")) ?? false,
  },
});

// ---------------------------------------------------------------------------------------------
// Kill: a runner calls a singleton object that, once its awakeable is resolved, calls itself
// (queued behind its own lock forever). Killing the runner must kill the whole call tree, so
// the singleton's key is usable again.

const confKillSingleton = restate.object({
  name: "ConfKillSingleton",
  handlers: {
    recursiveCall: async (ctx) => {
      const { id, promise } = ctx.awakeable();
      ctx.objectSendClient(confAwakeableHolder, ctx.key).hold(id);
      await promise;
      await ctx.objectClient(confKillSingleton, ctx.key).recursiveCall();
    },
    isUnlocked: async () => true,
  },
});

const confKillRunner = restate.object({
  name: "ConfKillRunner",
  handlers: {
    startCallTree: async (ctx) => {
      await ctx.objectClient(confKillSingleton, ctx.key).recursiveCall();
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Non-determinism: the first attempt for a key (in this process) takes one branch, every later
// attempt (a replay after a suspension or a retry) the other, so the replay does not match the
// journal. When a handler gets to its end it adds 1 to ConfCounter/<key>: a test sees that this
// never happens.

const seenKeys = new Map();

const firstTime = (ctx) => {
  const n = (seenKeys.get(ctx.key) ?? 0) + 1;
  seenKeys.set(ctx.key, n);
  return n === 1;
};

const countDone = (ctx) => ctx.objectSendClient(confCounter, ctx.key).add(1);

const confNonDeterministic = restate.object({
  name: "ConfNonDeterministic",
  handlers: {
    leftSleepRightCall: async (ctx) => {
      if (firstTime(ctx)) {
        await ctx.sleep(100);
      } else {
        await ctx.objectClient(confCounter, "nd-target").get();
      }
      countDone(ctx);
    },
    callDifferentMethod: async (ctx) => {
      if (firstTime(ctx)) {
        await ctx.objectClient(confCounter, "nd-target").get();
      } else {
        await ctx.objectClient(confCounter, "nd-target").reset();
      }
      countDone(ctx);
    },
    backgroundInvokeWithDifferentTargets: async (ctx) => {
      if (firstTime(ctx)) {
        ctx.objectSendClient(confCounter, "nd-target").get();
      } else {
        ctx.objectSendClient(confCounter, "nd-target").reset();
      }
      await ctx.sleep(100);
      countDone(ctx);
    },
    setDifferentKey: async (ctx) => {
      ctx.set(firstTime(ctx) ? "a" : "b", "my-state");
      await ctx.sleep(100);
      countDone(ctx);
    },
    // Deterministic: the same path on every attempt. Answers how often it ran for this key.
    steady: async (ctx) => {
      const runs = ((await ctx.get("steady")) ?? 0) + 1;
      ctx.set("steady", runs);
      await ctx.sleep(50);
      return runs;
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Sleep: one timer, or many concurrent timers in one invocation.

const confSleep = restate.object({
  name: "ConfSleep",
  handlers: {
    sleep: async (ctx, millis) => {
      await ctx.sleep(millis);
      return "slept";
    },
    // Waits for all the timers at once; answers how many fired.
    sleepMany: async (ctx, millis) => {
      const fired = await RestatePromise.all(millis.map((ms) => ctx.sleep(ms).map(() => 1)));
      return fired.length;
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Combinators: awakeables (their ids kept in state under `awk-<name>`, so a test can complete
// them through the shared handlers), sleeps, runs and named signals, raced and joined.

const keptAwakeable = (ctx, name) => {
  const { id, promise } = ctx.awakeable();
  ctx.set(`awk-${name}`, id);
  return promise;
};

// One awaitable of a spec: {awakeable: name} | {sleep: ms} | {runReturns: value} |
// {runFails: reason} | {signal: name}.
const awaitable = (ctx, spec) => {
  if (spec.awakeable !== undefined) return keptAwakeable(ctx, spec.awakeable);
  if (spec.sleep !== undefined) return ctx.sleep(spec.sleep).map(() => "sleep");
  if (spec.runReturns !== undefined) return ctx.run(`returns ${spec.runReturns}`, async () => spec.runReturns);
  if (spec.runFails !== undefined)
    return ctx.run(`fails ${spec.runFails}`, async () => {
      throw new TerminalError(spec.runFails);
    });
  if (spec.signal !== undefined) return ctx.signal(spec.signal);
  throw new TerminalError(`unknown awaitable ${JSON.stringify(spec)}`, { errorCode: 400 });
};

const storedAwakeable = async (ctx, name) => {
  const id = await ctx.get(`awk-${name}`);
  if (id == null) {
    throw new TerminalError(`awakeable ${name} is not registered yet`, { errorCode: 412 });
  }
  return id;
};

const confCombinators = restate.object({
  name: "ConfCombinators",
  handlers: {
    // {mode, of: [spec]}: mode "race" (first settled), "any" (first fulfilled), "all" (all
    // fulfilled, joined by "|"), "allSettled" (each as ok:<v> or err:<message>, joined by "|").
    combine: async (ctx, { mode, of }) => {
      const promises = of.map((spec) => awaitable(ctx, spec));
      switch (mode) {
        case "race":
          return await RestatePromise.race(promises);
        case "any":
          try {
            return await RestatePromise.any(promises);
          } catch (e) {
            // All of them failed: end with their reasons instead of retrying.
            const reasons = (e.errors ?? [e]).map((r) => r.message);
            throw new TerminalError(`all failed: ${reasons.join("|")}`, { errorCode: 409 });
          }
        case "all":
          return (await RestatePromise.all(promises)).join("|");
        case "allSettled":
          return (await RestatePromise.allSettled(promises))
            .map((r) => (r.status === "fulfilled" ? `ok:${r.value}` : `err:${r.reason.message}`))
            .join("|");
        default:
          throw new TerminalError(`unknown mode ${mode}`, { errorCode: 400 });
      }
    },
    // An awakeable with a timer: the timeout fails terminally with "await-timeout".
    awakeableOrTimeout: async (ctx, { name, timeoutMillis }) => {
      try {
        return await keptAwakeable(ctx, name).orTimeout(timeoutMillis);
      } catch (e) {
        if (e instanceof TimeoutError) {
          throw new TerminalError("await-timeout", { errorCode: 408 });
        }
        throw e;
      }
    },
    hasAwakeable: restate.handlers.object.shared(async (ctx, name) => (await ctx.get(`awk-${name}`)) != null),
    resolveAwakeable: restate.handlers.object.shared(async (ctx, { name, value }) => {
      ctx.resolveAwakeable(await storedAwakeable(ctx, name), value);
    }),
    rejectAwakeable: restate.handlers.object.shared(async (ctx, { name, reason }) => {
      ctx.rejectAwakeable(await storedAwakeable(ctx, name), reason);
    }),
  },
});

// ---------------------------------------------------------------------------------------------
// Attach and output: an object that blocks on an awakeable (attached to from the ingress), and
// a service that sends with an idempotency key and attaches to that send from its handler
// (the AttachInvocation command).

const confBlocker = restate.object({
  name: "ConfBlocker",
  handlers: {
    // Waits for its awakeable and answers the value it was resolved with.
    run: async (ctx) => {
      const { id, promise } = ctx.awakeable();
      ctx.set(HELD, id);
      const value = await promise;
      ctx.clear(HELD);
      return value;
    },
    getAwakeable: restate.handlers.object.shared(async (ctx) => (await ctx.get(HELD)) ?? ""),
    resolveAwakeable: restate.handlers.object.shared(async (ctx, value) => {
      const id = await ctx.get(HELD);
      if (id == null) {
        throw new TerminalError("nothing to resolve yet", { errorCode: 412 });
      }
      ctx.resolveAwakeable(id, value);
    }),
  },
});

const confAttach = restate.service({
  name: "ConfAttach",
  handlers: {
    // Sends ConfUtils/echo(value) with the idempotency key, attaches to it and answers its
    // result with the invocation id: {invocationId, result}.
    sendThenAttach: async (ctx, { idempotencyKey, value }) => {
      const handle = ctx.genericSend({
        service: "ConfUtils",
        method: "echo",
        parameter: value,
        inputSerde: restate.serde.json,
        idempotencyKey,
      });
      const invocationId = await handle.invocationId;
      const result = await ctx.invocation(invocationId).attach();
      return { invocationId, result };
    },
    // Attaches to any invocation by id and answers its result.
    attach: async (ctx, invocationId) => await ctx.invocation(InvocationIdParser.fromString(invocationId)).attach(),
  },
});

serve([
  confCounter,
  confMap,
  confList,
  confUtils,
  confProxy,
  confFailing,
  confAwakeableHolder,
  confCancelBlocking,
  confCancelRunner,
  confKillSingleton,
  confKillRunner,
  confNonDeterministic,
  confSleep,
  confCombinators,
  confBlocker,
  confAttach,
]);
