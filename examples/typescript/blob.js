// The example service plus a virtual object with large state, for benches/snapshot-vs-restate.sh:
//   PORT=9080 node blob.js
const restate = require("@restatedev/restate-sdk");
const { greeter, counter, serve } = require("./service");

// Large state: each `fill` adds `values` values of `kib` KiB of
// random text under new keys (random, so storage compression does not shrink them). Lazy state:
// an invocation fetches the keys it reads, not the whole object.
const blob = restate.object({
  name: "Blob",
  options: { enableLazyState: true },
  handlers: {
    fill: async (ctx, { values, kib }) => {
      const count = (await ctx.get("count")) ?? 0;
      for (let i = 0; i < values; i++) {
        ctx.set(`v${count + i}`, require("node:crypto").randomBytes(kib * 768).toString("base64"));
      }
      ctx.set("count", count + values);
      return count + values;
    },
    count: restate.handlers.object.shared(async (ctx) => (await ctx.get("count")) ?? 0),
  },
});

serve([greeter, counter, blob]);
