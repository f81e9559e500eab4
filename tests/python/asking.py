"""An MCP session whose client declares elicitation and answers each question as told, keeping
what it was asked."""

import contextlib
import os

from mcp import ClientSession, StdioServerParameters, stdio_client, types

from conftest import BIN


class Person:
    """Answers every question with `decision` (`None`: declines the form); records the messages."""

    def __init__(self, decision=None):
        self.decision = decision
        self.questions = []

    async def __call__(self, context, params):
        self.questions.append(params.message)
        choices = [c["const"] for c in params.requested_schema["properties"]["decision"]["oneOf"]]
        if self.decision is None:
            return types.ElicitResult(action="decline")
        assert self.decision in choices, (self.decision, choices)
        return types.ElicitResult(action="accept", content={"decision": self.decision})


@contextlib.asynccontextmanager
async def asking_session(env, person):
    """A session with `outpost mcp serve` whose client asks `person`."""
    params = StdioServerParameters(command=BIN, args=["mcp", "serve"], env=env)
    with open(os.devnull, "w") as err:
        async with stdio_client(params, errlog=err) as (read, write):
            async with ClientSession(read, write, elicitation_callback=person) as session:
                await session.initialize()
                yield session
