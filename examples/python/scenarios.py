"""Test services for the integration tests (crates/test-servers starts this under hypercorn):
Greeter and Counter of service.py, a workflow whose run waits for a durable promise, and a
handler that waits for an awakeable. `ctx.run` side effects append lines to $SIDE_EFFECT_FILE.

    .venv/bin/hypercorn scenarios:app --bind 127.0.0.1:9081
"""

import os

import restate
from restate import Context, Service, Workflow, WorkflowContext, WorkflowSharedContext

from service import counter, greeter

signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, name: str) -> str:
    ctx.set("status", "waiting")
    code = await ctx.promise("code").value()
    ctx.set("status", "done")
    return f"welcome {name} {code}"


@signup.handler(name="submitCode")
async def submit_code(ctx: WorkflowSharedContext, code: str) -> str:
    await ctx.promise("code").resolve(code)
    return "accepted"


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str:
    return await ctx.get("status") or "unknown"


awaiter = Service("Awaiter")


def append(line: str) -> str:
    with open(os.environ.get("SIDE_EFFECT_FILE", "/tmp/side-effects.txt"), "a") as file:
        file.write(line + "\n")
    return line


@awaiter.handler()
async def awakeable(ctx: Context, tag: str) -> str:
    name, promise = ctx.awakeable()
    await ctx.run("append", append, args=(f"awakeable {tag} {name}",))
    value = await promise
    await ctx.run("append", append, args=(f"resolved {tag} {value}",))
    return value


app = restate.app(services=[greeter, counter, signup, awaiter])
