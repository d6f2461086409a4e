// A Restate service written with the TypeScript SDK, served over HTTP/2 without TLS (h2c):
//   npm ci && node service.js            # listens on 127.0.0.1:9080 (HOST and PORT override)
//   restate deployments register http://localhost:9080
//   curl localhost:8080/Greeter/greet --json '"Sam"'
//   curl localhost:8080/Counter/alice/add --json 5

// Node 20 lacks Promise.withResolvers, which the SDK uses.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
  };
}

const http2 = require("node:http2");
const restate = require("@restatedev/restate-sdk");

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

// Serves `services` over h2c on $HOST:$PORT (default 127.0.0.1:9080); a server in a container
// reaches the host on the address of one of the host's interfaces, not on loopback.
const serve = (services) => {
  const host = process.env.HOST ?? "127.0.0.1";
  const port = Number(process.env.PORT ?? 9080);
  // PORT=0 takes any free port; the line below says which (the tests read it).
  const server = http2.createServer(restate.createEndpointHandler({ services }));
  server.listen(port, host, () => console.log(`listening on ${host}:${server.address().port}`));
};

module.exports = { greeter, counter, serve };

if (require.main === module) {
  serve([greeter, counter]);
}
