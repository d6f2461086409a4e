"""A Restate service written with the Python SDK (Greeter and Counter), served by hypercorn,
which answers HTTP/2 without TLS (h2c) and HTTP/1.1:

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/hypercorn service:app --bind 127.0.0.1:9081
    curl -X POST localhost:9070/deployments --json '{"uri": "http://localhost:9081"}'
"""

import restate
from restate import Context, ObjectContext, Service, VirtualObject

greeter = Service("Greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return f"Hello {name}!"


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    total = (await ctx.get("total") or 0) + delta
    ctx.set("total", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectContext) -> int:
    return await ctx.get("total") or 0


app = restate.app(services=[greeter, counter])
