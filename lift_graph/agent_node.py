"""``AgentNode``: a node that runs a pydantic-ai ``Agent`` on a prompt from the state.

``pydantic_ai`` is imported only by the agent you give (extra ``[pydantic-ai]``);
this module does not import it. The run's ``deps`` are passed to the agent as its
deps, and the agent's token usage is charged to the node's provider limit::

    class Summarize(AgentNode[State]):
        agent = Agent("openai:gpt-4o", output_type=str)   # or TestModel() in tests
        prompt_field = "text"
        output_field = "summary"
        provider = "openai"

Agents drive their own retries for output validation; transport retries and rate
limits belong to the engine (declare ``retry`` and ``provider`` on the node).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from .errors import ConfigurationError
from .node import BaseNode, End, RunContext

__all__ = ["AgentNode"]

StateT = TypeVar("StateT")


class AgentNode(BaseNode[StateT]):
    """Runs ``agent`` on ``prompt(state)``; writes its output to ``output_field``.

    ``reads`` / ``writes`` default to ``{prompt_field}`` / ``{output_field}``, so
    agent nodes join pipelines with inferred dependencies. Override ``prompt`` to
    build the prompt from several fields (and then declare ``reads`` yourself).

    :raises MissingInputError: ``prompt_field`` is not in the state.
    :raises ConfigurationError: the subclass set no ``agent``.
    """

    agent: ClassVar[Any] = None
    prompt_field: ClassVar[str | None] = None
    output_field: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        prompt = cls.__dict__.get("prompt_field")
        output = cls.__dict__.get("output_field")
        if prompt is not None and "reads" not in cls.__dict__:
            cls.reads = frozenset({prompt})
        if output is not None and "writes" not in cls.__dict__:
            cls.writes = frozenset({output})

    def prompt(self, state: StateT) -> str:
        """The user prompt (default: the ``prompt_field`` of the state, as text)."""
        if self.prompt_field is None:
            raise ConfigurationError(
                f"{type(self).__name__} sets no prompt_field: set it or override prompt()"
            )
        inputs = self.extract_inputs(state)
        return str(inputs[self.prompt_field])

    async def ask(self, ctx: RunContext[StateT]) -> Any:
        """Run the agent; write its output to the state; return the output."""
        if self.agent is None:
            raise ConfigurationError(
                f"{type(self).__name__} has no agent: set `agent = Agent(...)` on the class"
            )
        result = await self.agent.run(self.prompt(ctx.state), deps=ctx.deps)
        usage = getattr(result, "usage", None)
        if usage is not None and not hasattr(usage, "total_tokens") and callable(usage):
            usage = usage()  # pydantic-ai 1.x: a method; 2.x: a property
        total = getattr(usage, "total_tokens", None)
        if isinstance(total, int):
            ctx.record_tokens(total)
        output = result.output
        if self.output_field is not None:
            self.update_state(ctx.state, {self.output_field: output})
        return output

    async def run(self, ctx: RunContext[StateT]) -> Any:
        return End(await self.ask(ctx))
