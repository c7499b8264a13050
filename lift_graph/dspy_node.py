"""``DSPyNode``: a node whose inputs and outputs come from a DSPy signature.

Signature inputs bind first from the node's own dataclass fields, then from
same-named state fields; those read from the state are the node's ``reads``. Each
output is written to the state field ``outputs`` maps it to (default: its own name),
and those fields are its ``writes``, so a list of DSPyNodes is a pipeline whose
dependencies the scheduler infers, and a fork of per-item nodes collects its
results::

    @dataclass
    class Summarize(DSPyNode[State]):
        doc: str                                   # binds the signature input `doc`
        signature = "doc -> summary"
        outputs = {"summary": "summaries"}         # appended to State.summaries

    Fork([Summarize(doc=d) for d in docs])

A mapped output goes through the target field's reducer (``reducer.update(current,
value)``); a list field without one gets the value appended as one item. Unmapped
outputs overwrite their same-named field.

The module is built per instance configuration: ``signature``, ``module_type``
(default ``dspy.Predict``), ``build_module()`` and the node's other fields; or
``program`` gives a ready module (a compiled program). Every DSPyNode accepts
``signature=``, ``lm=``, ``outputs=``, ``program=`` and ``module_type=`` as
keywords, also a dataclass that does not declare them as fields.

The LM is passed per call through ``dspy.context(lm=...)``, which is task-local, so
concurrent nodes with different LMs do not see each other's. LMs the engine drives
should be built with ``num_retries=0`` (retries, backoff and limits belong to the
scheduler: declare ``retry`` on the node) and, in tests, ``cache=False``.
``dspy`` is imported only when such a node runs (extra ``[dspy]``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import math
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic_core import to_jsonable_python

from ._declared_reducers import reducers_of, reducers_of_types
from ._dspy_binding import (
    INSTANCE_MODULE,
    OPTIONS,
    Binding,
    binding_of,
    check_outputs,
    module_key,
    signature_of,
)
from ._dspy_binding import signature_fields as signature_fields
from ._dspy_stream import stream_fields, streamed_call
from ._state import MISSING
from .errors import ConfigurationError, LMNotConfiguredError, StateValidationError
from .node import (
    BaseNode,
    DerivedFields,
    End,
    RunContext,
    read_input,
    result_value,
    write_output,
)
from .reducers import Reducer

__all__ = ["DSPyNode", "signature_fields"]

StateT = TypeVar("StateT")
_N = TypeVar("_N")

_NO_LM = "No LM is loaded"
#: Output tokens reserved for an LM that sets no ``max_tokens``.
DEFAULT_OUTPUT_TOKENS = 1000

#: Per class: the keyword names its ``__init__`` takes, or None when it takes ``**kw``.
_INIT_PARAMS: dict[type, frozenset[str] | None] = {}


def _init_params(cls: type) -> frozenset[str] | None:
    try:
        return _INIT_PARAMS[cls]
    except KeyError:
        pass
    init = cls.__init__  # type: ignore[misc]  # reading, not assigning
    params: frozenset[str] | None = frozenset()
    if init is not object.__init__:
        sig = inspect.signature(init)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            params = None
        else:
            params = frozenset(sig.parameters)
    _INIT_PARAMS[cls] = params
    return params


class _DSPyNodeMeta(type):
    """Lets every DSPyNode take the per-instance options as keywords.

    A ``@dataclass`` subclass generates its own ``__init__``, which would refuse
    ``lm=`` unless the class declared it: the options its ``__init__`` does not take
    are set on the instance after it is built.
    """

    def __call__(cls: type[_N], *args: Any, **kwargs: Any) -> _N:
        params = _init_params(cls)
        options: dict[str, Any] = {}
        if params is not None:
            for name in OPTIONS:
                if name in kwargs and name not in params:
                    options[name] = kwargs.pop(name)
            if len(args) == 1 and not params - {"self"} and "signature" not in options:
                options["signature"] = args[0]  # `Gen("question -> category")`
                args = ()
        node: _N = type.__call__(cls, *args, **kwargs)
        for name, value in options.items():
            _set_option(node, name, value)
        if options:
            binding_of(node)  # a bad signature / outputs fails here, not at run time
        return node


def _set_option(node: Any, name: str, value: Any) -> None:
    try:
        object.__setattr__(node, name, value)  # also on a frozen dataclass
    except AttributeError:
        raise ConfigurationError(
            f"node {type(node).__name__} has no instance dict (slots): declare `{name}` as "
            "a dataclass field to set it per instance"
        ) from None


def _reads(target: object) -> frozenset[str] | None:
    binding = binding_of(target)
    return None if binding is None else binding.reads


def _writes(target: object) -> frozenset[str] | None:
    binding = binding_of(target)
    return None if binding is None else binding.writes


class DSPyNode(BaseNode[StateT], metaclass=_DSPyNodeMeta):
    """Runs a DSPy module on the signature's inputs; writes its outputs to the state.

    ``run`` binds the inputs (own fields, then state; ``MissingInputError`` names a
    missing one), awaits the module under the node's ``lm``, writes the outputs and
    returns ``End(prediction)``. Override ``run`` to route elsewhere after ``await
    self.predict(ctx)``.

    ``stream = True`` (or a collection of output names) streams the outputs while
    someone iterates the run (``Graph.iter``): the module runs through
    ``dspy.streamify`` and each chunk is a ``TokenEvent`` tagged with the node's key;
    the final prediction, the state writes and the tokens counted are those of an
    unstreamed call. With no listener (``graph.run``), or an LM that sends no chunks,
    the call is not streamed. ``True`` streams every signature output that one
    predictor of the module produces.

    :raises LMNotConfiguredError: (when run) no ``lm`` on the node and none
        configured with ``dspy.configure``.
    """

    #: Stream outputs as ``TokenEvent``s under ``Graph.iter``: False, True (every
    #: output) or the names of the outputs to stream.
    stream: ClassVar[bool | Collection[str]] = False
    signature: Any = None
    lm: Any = None
    outputs: Mapping[str, str] | None = None
    program: Any = None
    module_type: Any = None

    reads = DerivedFields(_reads)  # from the binding, per class and per instance
    writes = DerivedFields(_writes)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Fail where the class is written, not when it first runs. (Not through
        # binding_of: @dataclass has not added the fields yet.)
        sig = cls.__dict__.get("signature")
        if isinstance(sig, (str, type)):
            _, outs = signature_fields(sig)
            if isinstance(cls.__dict__.get("outputs"), Mapping):
                check_outputs(cls.__name__, cls.__dict__["outputs"], outs)

    # -- binding ------------------------------------------------------------------
    def binding(self) -> Binding:
        """Where this node's inputs come from and its outputs go.

        :raises ConfigurationError: no signature is known.
        """
        binding = binding_of(self)
        if binding is None:
            name = type(self).__name__
            raise ConfigurationError(
                f'node {name} has no DSPy signature: set `signature = "question -> '
                f'answer"` (or a dspy.Signature class) on the class, or pass '
                f"{name}(signature=...)"
            )
        return binding

    def extract_inputs(self, state: StateT) -> dict[str, Any]:
        """The signature's inputs: own fields first, then state fields.

        :raises MissingInputError: an input neither a field of the node nor of the state.
        """
        binding = self.binding()
        return {
            name: getattr(self, name) if name in binding.bound else read_input(self, state, name)
            for name in binding.inputs
        }

    def update_state(self, state: StateT, result: Any) -> None:
        """Write the outputs in ``result`` (a Prediction or a mapping) to the state.

        :raises StateValidationError: a mapped output's reducer refused the value.
        """
        reducers: Mapping[str, Reducer] | None = None
        for output, target, reduced in self.binding().targets:
            value = result_value(result, output)
            if value is MISSING:
                continue
            if reduced:
                if reducers is None:
                    reducers = self._reducers(state)
                value = self._through(state, output, target, value, reducers.get(target))
            write_output(state, target, value)

    def _reducers(self, state: Any) -> Mapping[str, Reducer]:
        if type(state) is dict:
            from ._plan import state_type_of

            return reducers_of_types([state_type_of(type(self))])
        return reducers_of(state)

    def _through(
        self, state: Any, output: str, target: str, value: Any, reducer: Reducer | None
    ) -> Any:
        # Not _state.get_field: a model's extra not set yet is "no value", not an error.
        current = state.get(target) if isinstance(state, dict) else getattr(state, target, None)
        if reducer is None:
            return [*current, value] if isinstance(current, list) else value
        try:
            return reducer.update(current, value)
        except Exception as exc:  # a reducer is user code: name where it failed
            name = type(self).__name__
            raise StateValidationError(
                f"node {name}: reducer {reducer.name} of state field {target!r} refused "
                f"output {output!r}: {type(exc).__name__}: {exc}",
                node=name,
                field=target,
            ) from exc

    # -- the module ---------------------------------------------------------------
    def build_module(self) -> Any:
        """The DSPy module to call: ``module_type(signature)``, ``dspy.Predict`` by
        default. Override for anything else (it may use the node's fields)."""
        import dspy

        self.binding()  # a clear error when there is no signature
        factory = self.module_type if self.module_type is not None else dspy.Predict
        return factory(signature_of(self))

    def module(self) -> Any:
        """``program`` when given, else the module built for this configuration
        (cached: instances with equal configuration share it)."""
        if self.program is not None:
            return self.program
        key = module_key(self, binding_of(self))
        if key is None:  # an unhashable configuration: built once per instance
            module = getattr(self, INSTANCE_MODULE, None)
            if module is None:
                module = self.build_module()
                with contextlib.suppress(AttributeError):  # slots: built per call
                    object.__setattr__(self, INSTANCE_MODULE, module)
            return module
        module = _MODULES.get(key)
        if module is None:
            if len(_MODULES) > 4096:
                _MODULES.clear()
            module = _MODULES[key] = self.build_module()
        return module

    async def predict(self, ctx: RunContext[StateT]) -> Any:
        """Call the module on this node's inputs and write its outputs to the state."""
        import dspy

        inputs = self.extract_inputs(ctx.state)
        module = self.module()
        sink = ctx._events if self.stream else None
        try:
            with dspy.context(lm=self.lm) if self.lm is not None else contextlib.nullcontext():
                if sink is None:
                    prediction = await _call(module, inputs)
                else:
                    binding = binding_of(self)
                    outputs = None if binding is None else [t[0] for t in binding.targets]
                    fields = stream_fields(self, module, outputs)
                    prediction = await streamed_call(self, module, inputs, fields, ctx, sink, _call)
        except Exception as exc:
            name = type(self).__name__
            if isinstance(exc, ValueError) and _NO_LM in str(exc):
                raise LMNotConfiguredError(
                    f"node {name} has no LM: set `lm = dspy.LM(...)` on the class, pass "
                    f"{name}(lm=...), or call dspy.configure(lm=...) before the run",
                    node=name,
                    node_key=ctx.node_key,
                ) from exc
            exc.add_note(f"raised by DSPy node {name} (node key {ctx.node_key!r})")
            raise
        _record_usage(ctx, prediction)
        self.update_state(ctx.state, prediction)
        return prediction

    async def run(self, ctx: RunContext[StateT]) -> Any:
        return End(await self.predict(ctx))

    # -- limits -------------------------------------------------------------------
    def estimate_tokens(self, state: StateT) -> int | None:
        """Tokens to reserve against the provider's tpm before the call.

        ``estimated_tokens`` when set; else the prompt (signature, demos and inputs,
        about four characters a token, as OpenAI's guidance has it) plus the LM's
        ``max_tokens`` (``DEFAULT_OUTPUT_TOKENS`` when it sets none): providers count
        a call's ``max_tokens`` against tpm when they accept it.
        """
        if self.estimated_tokens is not None:
            return self.estimated_tokens
        import dspy

        try:
            inputs = self.extract_inputs(state)
        except Exception:  # noqa: BLE001 - the call itself reports missing inputs
            return None
        module = self.module()
        predictors = module.predictors() if hasattr(module, "predictors") else []
        demos = [p.demos for p in predictors]
        text = f"{_signature_text(signature_of(self))}{demos!r}{inputs!r}"
        lm = self.lm if self.lm is not None else dspy.settings.lm
        kwargs = getattr(lm, "kwargs", None) or {}
        output = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")
        return math.ceil(len(text) / 4) + int(output or DEFAULT_OUTPUT_TOKENS)

    # -- durability ---------------------------------------------------------------
    def cache_fingerprint(self) -> dict[str, Any]:
        """What a cached result of this node also depends on: the LM's model, the
        signature (instructions and fields) and the module's demos."""
        import dspy

        lm = self.lm if self.lm is not None else dspy.settings.lm
        module = self.module()
        predictors = module.predictors() if hasattr(module, "predictors") else []
        return {
            "lm": getattr(lm, "model", None) if lm is not None else None,
            "signature": _signature_text(signature_of(self)),
            "demos": [to_jsonable_python(p.demos, fallback=repr) for p in predictors],
        }

    @staticmethod
    def end_to_json(value: Any) -> Any:
        """The JSON form of this node's ``End`` value (a ``dspy.Prediction``)."""
        to_dict = getattr(value, "toDict", None)
        if callable(to_dict):
            return {"prediction": to_jsonable_python(to_dict(), fallback=repr)}
        return {"value": to_jsonable_python(value, fallback=repr)}

    @staticmethod
    def end_from_json(data: Any) -> Any:
        import dspy

        if "prediction" in data:
            return dspy.Prediction(**data["prediction"])
        return data["value"]


def _signature_text(signature: Any) -> str:
    from dspy.signatures.signature import ensure_signature

    signature = ensure_signature(signature)
    fields = getattr(signature, "fields", {})
    parts = [getattr(signature, "instructions", "") or ""]
    for name, info in fields.items():
        extra = getattr(info, "json_schema_extra", None) or {}
        parts.append(f"{name}:{extra.get('__dspy_field_type', '')}:{extra.get('desc', '')}")
    return "\n".join(parts)


#: Built modules by configuration (``module_key``).
_MODULES: dict[tuple[Any, ...], Any] = {}


#: Threads for programs with only a sync ``forward``. asyncio's default pool has
#: min(32, cores + 4) threads, which would cap such nodes far below the run's
#: concurrency limit; the engine's limits, not this pool, bound how many run.
_FORWARD_THREADS = 256
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _forward_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_FORWARD_THREADS, thread_name_prefix="lift-graph-dspy"
        )
    return _executor


async def _call(module: Any, inputs: dict[str, Any]) -> Any:
    if hasattr(module, "aforward") or not callable(module):
        return await module.acall(**inputs)
    # A module with only a sync `forward` (as DSPy's tutorials write them) runs on a
    # thread, in a copy of this task's context so `dspy.context(lm=...)` holds there.
    # A cancelled node stops waiting; the thread finishes its call in the background.
    call = functools.partial(contextvars.copy_context().run, module, **inputs)
    return await asyncio.get_running_loop().run_in_executor(_forward_pool(), call)


def _record_usage(ctx: RunContext[Any], prediction: Any) -> None:
    usage = getattr(prediction, "get_lm_usage", None)
    if callable(usage):
        for stats in (usage() or {}).values():
            if isinstance(stats, dict):
                ctx.record_tokens(int(stats.get("total_tokens") or 0))
