"""Token streaming for ``DSPyNode``: the module runs through ``dspy.streamify`` and
each chunk becomes a ``TokenEvent`` tagged with the node's key.

Only used when the node sets ``stream`` and the run has a listener (``Graph.iter``);
the final ``Prediction`` is the node's result exactly as without streaming.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from .errors import ConfigurationError, NodeExecutionError
from .events import EventSink, TokenEvent
from .node import RunContext

__all__ = ["stream_fields", "streamed_call"]

Call = Callable[[Any, dict[str, Any]], Awaitable[Any]]


def stream_fields(node: Any, module: Any, outputs: Collection[str] | None) -> list[str]:
    """The output fields to stream: those named by ``node.stream`` (a collection of
    names), or for ``stream = True`` every signature output (``outputs``; None: any
    output) that exactly one predictor of ``module`` produces (a listener needs to
    know which one).

    :raises ConfigurationError: a named field is not produced by exactly one
        predictor of the module.
    """
    named = module.named_predictors() if hasattr(module, "named_predictors") else []
    producers: dict[str, int] = {}
    for _, predictor in named:
        for name in getattr(predictor.signature, "output_fields", {}):
            producers[name] = producers.get(name, 0) + 1
    wanted = node.stream
    if wanted is True:
        names = producers if outputs is None else outputs
        return [name for name in names if producers.get(name) == 1]
    fields = sorted(wanted)
    bad = [f for f in fields if producers.get(f) != 1]
    if bad:
        cls = type(node).__name__
        raise ConfigurationError(
            f"node {cls} cannot stream fields {bad}: each must be an output of exactly one "
            f"predictor of its module (outputs: {sorted(producers)}); fix `stream`"
        )
    return fields


async def streamed_call(
    node: Any,
    module: Any,
    inputs: dict[str, Any],
    fields: list[str],
    ctx: RunContext[Any],
    sink: EventSink,
    fallback: Call,
) -> Any:
    """Call ``module(**inputs)`` streaming ``fields``; returns its final Prediction.

    An LM that sends no chunks (``DummyLM``, a cache hit) gives no token events. One
    that cannot stream at all (it refuses, or its engine has no ``stream``) is called
    again without streaming, provided no chunk was sent yet.

    :raises ConfigurationError: ``dspy.streamify`` refused the fields.
    """
    import dspy

    name = type(node).__name__
    if not fields:
        return await fallback(module, inputs)
    listeners = [dspy.streaming.StreamListener(signature_field_name=f) for f in fields]
    is_async = hasattr(module, "aforward") or not callable(module)
    try:
        program = dspy.streamify(module, stream_listeners=listeners, is_async_program=is_async)
    except ValueError as exc:
        raise ConfigurationError(
            f"node {name} cannot stream fields {fields}: {exc}; set `stream` to the "
            "output fields exactly one predictor of its module produces"
        ) from exc
    final: Any = None
    sent = False
    execution_id, key = ctx.execution_id, ctx.node_key
    try:
        async with contextlib.aclosing(program(**inputs)) as chunks:
            async for item in chunks:
                if isinstance(item, dspy.streaming.StreamResponse):
                    sent = True
                    now = time.perf_counter()
                    field, text = item.signature_field_name, item.chunk
                    sink(TokenEvent(execution_id, key, now, field, text, item.is_last_chunk))
                elif not isinstance(item, dspy.streaming.StatusMessage):
                    final = item  # the program's result comes last
    except Exception as exc:
        if sent or not _cannot_stream(exc):
            raise
        return await fallback(module, inputs)
    if final is None:
        raise NodeExecutionError(
            f"node {name}: the streamed DSPy call ended without a result; set "
            "`stream = False` on the node if its module cannot be streamed",
            node=name,
        )
    return final


def _cannot_stream(exc: BaseException) -> bool:
    """Whether ``exc`` says the LM cannot stream (rather than that the call failed).

    By its message: ``dspy.streamify`` re-raises the LM's error ``from None``, so the
    engine's own ``AttributeError`` (an engine without ``stream``) is gone.
    """
    try:
        from dspy.utils.exceptions import LMError, LMUnsupportedFeatureError
    except ImportError:  # an older dspy
        return False
    text = str(exc)
    if isinstance(exc, LMUnsupportedFeatureError):
        return "stream" in text.lower()
    return isinstance(exc, LMError) and "attribute 'stream'" in text
