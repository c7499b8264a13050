"""``AgentNode``: a node that runs a pydantic-ai ``Agent`` on a prompt from the state.

``pydantic_ai`` is imported only by the agent you give (extra ``[pydantic-ai]``);
this module does not import it. The run's ``deps`` are passed to the agent as its
deps, and the agent's token usage is charged to the node's provider limit::

    class Summarize(AgentNode[State]):
        agent = Agent("openai:gpt-4o", output_type=str)   # or TestModel() in tests
        prompt_field = "text"
        output_field = "summary"
        provider = "openai"

With ``history_field`` the node keeps a conversation: the state field (a
``list[ModelMessage]``, ``[]`` to start) is passed as ``message_history=`` and
replaced after the run by a new list, the old messages plus the run's new ones, so
the next run of the node (in a loop, say) continues the conversation::

    class State(BaseModel):
        draft_request: str
        draft: str = ""
        writer_messages: list[ModelMessage] = []

    class Write(AgentNode[State]):
        agent = Agent("openai:gpt-4o", output_type=str)
        prompt_field = "draft_request"
        output_field = "draft"
        history_field = "writer_messages"   # reads and writes it too

``agent``, ``prompt_field``, ``output_field`` and ``history_field`` are read through
the instance, so a dataclass subclass may make any of them a field and set it per
node; ``reads`` / ``writes`` follow the instance's values.

Agents drive their own retries for output validation; transport retries and rate
limits belong to the engine (declare ``retry`` and ``provider`` on the node).
"""

from __future__ import annotations

from typing import Any, TypeVar

from ._text import short_repr
from .errors import ConfigurationError, InvalidStateError
from .node import BaseNode, DerivedFields, End, RunContext, read_input, write_output

__all__ = ["AgentNode"]

StateT = TypeVar("StateT")

_FIELD_ATTRIBUTES = ("prompt_field", "output_field", "history_field")


def _field_name(node: object, attr: str) -> str | None:
    """The state field a node's ``attr`` names, or None.

    On a class, a slotted dataclass field is a member descriptor, not a name: the
    instance's value is what counts, so the class claims nothing for it.
    """
    value = getattr(node, attr, None)
    return value if isinstance(value, str) else None


def _default_reads(node: object) -> frozenset[str] | None:
    prompt = _field_name(node, "prompt_field")
    if prompt is None:
        return None  # prompt() is overridden and may read anything: "everything"
    history = _field_name(node, "history_field")
    return frozenset({prompt} if history is None else {prompt, history})


def _default_writes(node: object) -> frozenset[str] | None:
    fields = (_field_name(node, "output_field"), _field_name(node, "history_field"))
    return frozenset(f for f in fields if f is not None) or None


def _usage_tokens(result: Any) -> int | None:
    usage = getattr(result, "usage", None)
    if usage is not None and not hasattr(usage, "total_tokens") and callable(usage):
        usage = usage()  # pydantic-ai 1.x: a method; 2.x: a property
    total = getattr(usage, "total_tokens", None)
    return total if isinstance(total, int) else None


class AgentNode(BaseNode[StateT]):
    """Runs ``agent`` on ``prompt(state)``; writes its output to ``output_field``.

    ``history_field`` (optional) names a ``list[ModelMessage]`` state field holding
    the agent's conversation: it is passed as ``message_history`` (``[]`` or ``None``:
    a fresh conversation) and replaced by a new list with the run's new messages
    appended, never changed in place, so fork branches each extend their own copy
    and the join appends their messages in branch order.

    ``reads`` defaults to ``{prompt_field, history_field}`` (``None``, "everything",
    without a ``prompt_field``) and ``writes`` to ``{output_field, history_field}``, so
    agent nodes join pipelines with inferred dependencies. They follow the values of
    the node instance, so ``agent`` and the ``*_field`` attributes may be dataclass
    fields set per node. Override ``prompt`` to build the prompt from several fields
    (and then declare ``reads`` yourself); a ``reads`` / ``writes`` you set replaces
    the default whole, so list the history field in it.

    :raises MissingInputError: ``prompt_field`` or ``history_field`` is not in the state.
    :raises InvalidStateError: the ``history_field`` value is not a list of messages.
    :raises ConfigurationError: no ``agent``, or a ``*_field`` that is not a str.
    """

    # Not ClassVars: a dataclass subclass may redeclare them as per-instance fields.
    agent: Any = None
    prompt_field: str | None = None
    output_field: str | None = None
    history_field: str | None = None

    reads = DerivedFields(_default_reads)
    writes = DerivedFields(_default_writes)

    def prompt(self, state: StateT) -> str:
        """The user prompt (default: the ``prompt_field`` of the state, as text)."""
        if self.prompt_field is None:
            raise ConfigurationError(
                f"{type(self).__name__} sets no prompt_field: set it or override prompt()"
            )
        return str(read_input(self, state, self.prompt_field))

    def history(self, state: StateT) -> list[Any]:
        """The conversation so far: the ``history_field`` list (``[]`` without one).

        :raises MissingInputError: the state has no such field.
        :raises InvalidStateError: its value is not a list of pydantic-ai messages.
        """
        name = self.history_field
        if name is None:
            return []
        value = read_input(self, state, name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad_history(name, f"holds {type(value).__name__} {short_repr(value)}")
        for index, message in enumerate(value):
            # ModelRequest / ModelResponse, by their discriminator: no pydantic_ai import.
            if getattr(message, "kind", None) not in ("request", "response"):
                raise self._bad_history(
                    name,
                    f"item {index} is {type(message).__name__} {short_repr(message)} "
                    "(a history loaded from JSON into an untyped field?)",
                )
        return value

    def _bad_history(self, name: str, problem: str) -> InvalidStateError:
        node = type(self).__name__
        return InvalidStateError(
            f"node {node}: state field {name!r} (its history_field) {problem}; it must "
            "be a list of pydantic-ai ModelMessage: declare it as `list[ModelMessage]` "
            "with default [] on the state model",
            node=node,
            field=name,
        )

    def _check_configuration(self) -> None:
        node = type(self).__name__
        if self.agent is None:
            raise ConfigurationError(
                f"{node} has no agent: set `agent = Agent(...)` on the class "
                "(or pass it per instance as a dataclass field)"
            )
        for attr in _FIELD_ATTRIBUTES:
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(
                    f"node {node}: attribute `{attr}` must be a state field name (a "
                    f"non-empty str) or None, got {short_repr(value)}"
                )
        if self.history_field is not None and self.history_field == self.output_field:
            raise ConfigurationError(
                f"node {node}: history_field and output_field are both "
                f"{self.history_field!r}; the output would overwrite the conversation: "
                "give them different fields"
            )

    async def ask(self, ctx: RunContext[StateT]) -> Any:
        """Run the agent; write its output (and history) to the state; return the output."""
        self._check_configuration()
        history = self.history(ctx.state)
        result = await self.agent.run(
            self.prompt(ctx.state), deps=ctx.deps, message_history=history or None
        )
        tokens = _usage_tokens(result)
        if tokens is not None:
            ctx.record_tokens(tokens)
        output = result.output
        if self.output_field is not None:
            write_output(ctx.state, self.output_field, output)
        if self.history_field is not None:
            # A new list (old + new), never `history.extend`: the old list may be
            # shared with the state at a fork, and an append-only change is what the
            # join merges (each branch's new messages, in branch order).
            write_output(ctx.state, self.history_field, [*history, *result.new_messages()])
        return output

    async def run(self, ctx: RunContext[StateT]) -> Any:
        return End(await self.ask(ctx))
