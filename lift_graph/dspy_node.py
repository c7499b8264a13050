"""``DSPyNode``: a node whose inputs and outputs come from a DSPy signature.

The signature's input fields become the node's ``reads`` and its output fields its
``writes``, so a list of DSPyNodes is a pipeline whose dependencies the scheduler
infers. ``dspy`` is imported only when such a node runs (extra ``[dspy]``).

The LM is passed per call through ``dspy.context(lm=...)``, which is task-local,
so concurrent nodes with different LMs do not see each other's. LMs the engine
drives should be built with ``num_retries=0`` (retries, backoff and limits belong to
the scheduler: declare ``retry`` on the node) and, in tests, ``cache=False``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, TypeVar

from .errors import ConfigurationError
from .node import BaseNode, End, RunContext

__all__ = ["DSPyNode", "signature_fields"]

StateT = TypeVar("StateT")

_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)")


def _parse_names(part: str) -> list[str]:
    names = []
    depth = 0
    current = ""
    for ch in part:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            names.append(current)
            current = ""
        else:
            current += ch
    names.append(current)
    out = []
    for item in names:
        m = _NAME.match(item)
        if m:
            out.append(m.group(1))
    return out


def signature_fields(signature: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(inputs, outputs)`` of a DSPy signature class or a ``"a, b -> c"`` string.

    :raises ConfigurationError: neither form.
    """
    if isinstance(signature, str):
        if "->" not in signature:
            raise ConfigurationError(
                f"DSPy signature string {signature!r} has no '->': write 'inputs -> outputs'"
            )
        left, right = signature.split("->", 1)
        return tuple(_parse_names(left)), tuple(_parse_names(right))
    inputs = getattr(signature, "input_fields", None)
    outputs = getattr(signature, "output_fields", None)
    if isinstance(inputs, dict) and isinstance(outputs, dict):
        return tuple(inputs), tuple(outputs)
    raise ConfigurationError(
        f"signature {signature!r} is neither a dspy.Signature class nor an "
        "'inputs -> outputs' string"
    )


class DSPyNode(BaseNode[StateT]):
    """Runs ``module`` (default ``dspy.Predict(signature)``) on inputs from the state.

    ``run`` reads the signature's inputs from the state (``MissingInputError`` names
    a missing one), awaits ``module.acall``, writes the outputs back and returns
    ``End(prediction)``. Override ``run`` to route elsewhere after ``await
    self.predict(ctx)``. Set ``lm`` (class or instance attribute) to pin an LM.
    """

    signature: ClassVar[Any] = None
    lm: ClassVar[Any] = None
    _module_cache: ClassVar[dict[type, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        sig = cls.__dict__.get("signature")
        if sig is not None:
            inputs, outputs = signature_fields(sig)
            if "reads" not in cls.__dict__:
                cls.reads = frozenset(inputs)
            if "writes" not in cls.__dict__:
                cls.writes = frozenset(outputs)

    def build_module(self) -> Any:
        """The DSPy module to call; override for ChainOfThought, ReAct, ...

        Built once per class and reused (DSPy modules are stateless to call).
        """
        import dspy

        return dspy.Predict(self.signature)

    def _module(self) -> Any:
        cls = type(self)
        module = DSPyNode._module_cache.get(cls)
        if module is None:
            module = self.build_module()
            DSPyNode._module_cache[cls] = module
        return module

    async def predict(self, ctx: RunContext[StateT]) -> Any:
        """Call the module on this node's inputs and write its outputs to the state."""
        import dspy

        inputs = self.extract_inputs(ctx.state)
        module = self._module()
        if self.lm is not None:
            with dspy.context(lm=self.lm):
                prediction = await module.acall(**inputs)
        else:
            prediction = await module.acall(**inputs)
        usage = getattr(prediction, "get_lm_usage", None)
        if callable(usage):
            for stats in (usage() or {}).values():
                if isinstance(stats, dict):
                    ctx.record_tokens(int(stats.get("total_tokens") or 0))
        self.update_state(ctx.state, prediction)
        return prediction

    async def run(self, ctx: RunContext[StateT]) -> Any:
        return End(await self.predict(ctx))
