"""Test services for the integration tests (crates/test-servers starts this as a process),
served by hypercorn (h2c and HTTP/1.1); run from examples/python:

    .venv/bin/hypercorn scenarios:app --bind 127.0.0.1:9081

Same names and JSON semantics as Greeter and Counter in ../typescript/scenarios.js.
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
