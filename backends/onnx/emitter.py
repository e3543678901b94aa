"""The ONNX graph under construction: value names, their dtypes, constants and run-time dims.

Lowerings call ``em.op("Add", [a, b])`` and get the output's name back; the emitter knows every
value's element type (from the op's schema), so it can adapt a node to what a runtime's kernels
support: given a ``KernelTable``, an input whose dtype has no kernel is cast to one that has
(float16 to float32, bool Where to int32) and the output cast back. Symbolic
dims become int64 values computed from the input shapes at run time (``em.dims((batch, 64))``).
``ort_kernel_table()`` reads that table from ONNX Runtime's own kernel registry.

The emitter is also what a lowering row's ``when`` predicate sees: ``contrib_ops`` says whether
ONNX Runtime's com.microsoft ops may be used, and ``domains`` records the non-standard domains the
emitted nodes use (the exporter imports their opsets).
"""
from __future__ import annotations

import functools
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphdsl import dtypes as _dt
from graphdsl.errors import LoweringError
from graphdsl.types import Dim

ONNX_DTYPE = {
    "float64": TensorProto.DOUBLE, "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16, "int64": TensorProto.INT64, "int32": TensorProto.INT32,
    "int16": TensorProto.INT16, "int8": TensorProto.INT8, "uint64": TensorProto.UINT64,
    "uint32": TensorProto.UINT32, "uint16": TensorProto.UINT16, "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
}
_TYPE_STR = {
    TensorProto.DOUBLE: "tensor(double)", TensorProto.FLOAT: "tensor(float)",
    TensorProto.FLOAT16: "tensor(float16)", TensorProto.BFLOAT16: "tensor(bfloat16)",
    TensorProto.INT64: "tensor(int64)", TensorProto.INT32: "tensor(int32)",
    TensorProto.INT16: "tensor(int16)", TensorProto.INT8: "tensor(int8)",
    TensorProto.UINT64: "tensor(uint64)", TensorProto.UINT32: "tensor(uint32)",
    TensorProto.UINT16: "tensor(uint16)", TensorProto.UINT8: "tensor(uint8)",
    TensorProto.BOOL: "tensor(bool)",
}
_FROM_TYPE_STR = {v: k for k, v in _TYPE_STR.items()}
# When a kernel lacks a dtype, try these instead, in order. Narrow floats widen to float32 (the
# references' own accumulation type; rounding back once per node is what they do too); ints and
# bools widen losslessly. float64 would narrow to float32 where a kernel has no double version;
# ONNX Runtime's Erf is the one such kernel we emit, and lower/elementwise.erf writes it out instead.
_FALLBACK = {
    TensorProto.FLOAT16: (TensorProto.FLOAT,), TensorProto.BFLOAT16: (TensorProto.FLOAT,),
    TensorProto.DOUBLE: (TensorProto.FLOAT,), TensorProto.FLOAT: (TensorProto.DOUBLE,),
    TensorProto.INT32: (TensorProto.INT64,), TensorProto.UINT32: (TensorProto.INT64,),
    TensorProto.INT16: (TensorProto.INT32, TensorProto.INT64),
    TensorProto.INT8: (TensorProto.INT32, TensorProto.INT64),
    TensorProto.UINT16: (TensorProto.INT32, TensorProto.INT64),
    TensorProto.UINT8: (TensorProto.INT32, TensorProto.INT64),
    TensorProto.BOOL: (TensorProto.INT32, TensorProto.INT64, TensorProto.FLOAT),
}
# Ops that move values without reading them: for those, an unsigned type can also run as the
# signed type of its width (Cast between the two is a bijection on the bits)
_MOVES_VALUES = {"Where", "Reshape", "Concat", "Gather", "GatherElements", "GatherND", "Transpose",
                 "Expand", "Identity", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Tile",
                 "ScatterElements", "ScatterND"}
_SAME_BITS = {TensorProto.UINT64: TensorProto.INT64, TensorProto.UINT32: TensorProto.INT32,
              TensorProto.UINT16: TensorProto.INT16, TensorProto.UINT8: TensorProto.INT8}
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def onnx_dtype(dt) -> int:
    dt = _dt.dtype(dt)
    if dt.storage:   # ONNX has the types, but ONNX Runtime's saturation and NaN rules are not checked
        raise LoweringError(f"the ONNX export does not take the storage dtype {dt.name} yet",
                            hint="run graphs with float8/float4/int4/int2 values on numpy or llvm")
    return ONNX_DTYPE[dt.name]


def np_dtype(onnx_type: int) -> np.dtype:
    return _dt.dtype(next(k for k, v in ONNX_DTYPE.items() if v == onnx_type)).np


class KernelTable:
    """Which element types a runtime's kernels take, per ONNX op, opset range and type constraint."""

    def __init__(self, entries: Mapping[str, list[tuple[int, int, dict[str, set[str]]]]]):
        self._entries = entries

    def supported(self, op_type: str, since: int, constraint: str) -> set[str] | None:
        """The type strings the kernel for ``op_type`` (schema ``since``) takes for ``constraint``;
        None when the runtime has no kernel entry to consult (then nothing is adapted)."""
        found = None
        for start, end, constraints in self._entries.get(op_type, ()):
            if start <= since <= end and constraint in constraints:
                found = (found or set()) | constraints[constraint]
        return found


@functools.lru_cache(maxsize=1)
def ort_kernel_table() -> KernelTable:
    """The element types of every CPU kernel of ONNX Runtime's default domain, from its registry."""
    from onnxruntime.capi import _pybind_state as C
    entries: dict[str, list] = {}
    for k in C.get_all_opkernel_def():
        if k.provider != "CPUExecutionProvider" or k.domain not in ("", "ai.onnx"):
            continue
        start, end = k.version_range
        types = {c: set(ts) for c, ts in k.type_constraints.items()}
        entries.setdefault(k.op_name, []).append((start, end, types))
    return KernelTable(entries)


class Emitter:
    """Collects nodes, initializers and value types of one ONNX graph."""

    def __init__(self, opset: int, kernels: KernelTable | None = None, *, exact: bool = False,
                 contrib_ops: bool = False):
        self.opset = opset
        self.kernels = kernels
        self.exact = exact    # the onnxruntime backend's own model, not a user's file: no fusable forms needed
        self.contrib_ops = contrib_ops   # com.microsoft ops may be emitted where they fit
        self.domains: set[str] = set()   # the non-standard domains of the emitted nodes
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.dtypes: dict[str, int] = {}
        self._used: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._dim_cache: dict = {}
        self.dim_sources: dict[str, tuple[str, int]] = {}   # symbol -> (value name, axis)

    # -- names and values ---------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        base = hint or "v"
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def initializer(self, name: str, value: np.ndarray) -> str:
        """An initializer under its own (already reserved) name: a parameter's value."""
        arr = np.asarray(value)
        self.initializers.append(to_tensor_proto(arr, name))
        self.dtypes[name] = onnx_dtype(_dt.dtype(arr.dtype))
        return name

    def const(self, value, dtype: int | None = None, hint: str = "const") -> str:
        """An initializer holding ``value`` (small ones are shared)."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(np_dtype(dtype))
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(to_tensor_proto(arr, name))
        self.dtypes[name] = onnx_dtype(_dt.dtype(arr.dtype))
        if key is not None:
            self._consts[key] = name
        return name

    def op(self, op_type: str, inputs: Iterable[str | None], *, outputs: int = 1,
           dtype: int | None = None, hint: str | None = None, domain: str = "", **attrs):
        """Add a node; returns its output name (a list of names when ``outputs`` > 1)."""
        inputs = ["" if i is None else i for i in inputs]
        schema = _schema(op_type, self.opset, domain)
        adapt = self._adaptation(op_type, schema, inputs) if schema is not None else {}
        if adapt:
            return self._adapted(op_type, schema, inputs, adapt, outputs, dtype, hint, domain, attrs)
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        if domain:
            self.domains.add(domain)
        node = helper.make_node(op_type, inputs, names, name=names[0], domain=domain or None,
                                **{k: v for k, v in attrs.items() if v is not None})
        self.nodes.append(node)
        for i, name in enumerate(names):
            self.dtypes[name] = dtype if dtype is not None else self._out_dtype(schema, i, inputs, attrs,
                                                                                op_type)
        return names[0] if outputs == 1 else names

    def _out_dtype(self, schema, index, inputs, attrs, op_type) -> int:
        if op_type == "Cast":
            return attrs["to"]
        if schema is None:
            return self.dtypes[inputs[0]]
        type_str = schema.outputs[min(index, len(schema.outputs) - 1)].type_str
        for formal, actual in _bind_inputs(schema, inputs):
            if formal.type_str == type_str and actual:
                return self.dtypes[actual]
        if type_str in _FROM_TYPE_STR:
            return _FROM_TYPE_STR[type_str]
        allowed = [c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == type_str]
        if allowed and len(allowed[0]) == 1:
            return _FROM_TYPE_STR[allowed[0][0]]
        raise LoweringError(f"cannot tell the output type of ONNX {op_type}; pass dtype=")

    # -- adapting to a runtime's kernels --------------------------------------------------
    def _adaptation(self, op_type, schema, inputs) -> dict[str, tuple[int, int]]:
        """{constraint: (have, use)} for each type constraint whose input dtype has no kernel."""
        if self.kernels is None:
            return {}
        out = {}
        for formal, actual in _bind_inputs(schema, inputs):
            if not actual or formal.type_str in out:
                continue
            ok = self.kernels.supported(op_type, schema.since_version, formal.type_str)
            have = self.dtypes[actual]
            if ok is None or _TYPE_STR[have] in ok:
                continue
            alternatives = _FALLBACK.get(have, ())
            if op_type in _MOVES_VALUES and have in _SAME_BITS:
                alternatives = (_SAME_BITS[have], *alternatives)
            for alt in alternatives:
                if _TYPE_STR[alt] in ok:
                    out[formal.type_str] = (have, alt)
                    break
        return out

    def _adapted(self, op_type, schema, inputs, adapt, outputs, dtype, hint, domain, attrs):
        cast_in = []
        for formal, actual in _bind_inputs(schema, inputs):
            if actual and formal.type_str in adapt:
                actual = self.cast(actual, adapt[formal.type_str][1])
            cast_in.append(actual)
        saved, self.kernels = self.kernels, None   # the node itself is now supported
        try:
            result = self.op(op_type, cast_in, outputs=outputs, dtype=dtype, hint=hint, domain=domain, **attrs)
        finally:
            self.kernels = saved
        names = [result] if outputs == 1 else result
        back = []
        for i, name in enumerate(names):
            type_str = schema.outputs[min(i, len(schema.outputs) - 1)].type_str
            back.append(self.cast(name, adapt[type_str][0]) if type_str in adapt else name)
        return back[0] if outputs == 1 else back

    def cast(self, x: str, to: int) -> str:
        if self.dtypes[x] == to:
            return x
        return self.op("Cast", [x], to=to)

    # -- run-time dims --------------------------------------------------------------------
    def bind_dims(self, name: str, shape) -> None:
        """Remember where each plain symbolic dim of a graph input can be read at run time."""
        for axis, d in enumerate(shape):
            if isinstance(d, Dim) and len(d.terms) == 1:
                (mono, coef), = d.terms.items()
                if coef == 1 and len(mono) == 1 and mono[0][1] == 1:
                    self.dim_sources.setdefault(mono[0][0], (name, axis))

    def dim(self, d) -> str:
        """An int64 tensor of shape [1] holding dim ``d`` (computed from input shapes if symbolic)."""
        if isinstance(d, int):
            return self.const(np.array([d], np.int64), hint="dim")
        key = ("dim", d)
        if key in self._dim_cache:
            return self._dim_cache[key]
        total = None
        for mono, coef in sorted(d.terms.items(), key=lambda mc: mc[0]):
            term = self.const(np.array([coef], np.int64), hint="dim") if (coef != 1 or not mono) else None
            for sym, power in mono:
                for _ in range(power):
                    v = self._symbol(sym)
                    term = v if term is None else self.op("Mul", [term, v], hint="dim")
            total = term if total is None else self.op("Add", [total, term], hint="dim")
        self._dim_cache[key] = total
        return total

    def _symbol(self, sym: str) -> str:
        key = ("sym", sym)
        if key not in self._dim_cache:
            if sym not in self.dim_sources:
                raise LoweringError(f"symbolic dim {sym!r} appears in no input's shape",
                                    hint="every symbol must be a plain dim of some graph input")
            name, axis = self.dim_sources[sym]
            self._dim_cache[key] = self.op("Shape", [name], start=axis, end=axis + 1, hint=sym)
        return self._dim_cache[key]

    def dims(self, shape) -> str:
        """An int64 vector holding ``shape`` (a constant when every dim is an int)."""
        shape = tuple(shape)
        if all(isinstance(d, int) for d in shape):
            return self.const(np.array(shape, np.int64), hint="shape")
        key = ("shape", shape)
        if key not in self._dim_cache:
            self._dim_cache[key] = self.op("Concat", [self.dim(d) for d in shape], axis=0, hint="shape")
        return self._dim_cache[key]

    def scalar(self, d, dtype: int = TensorProto.INT64) -> str:
        """Dim ``d`` as a 0-d tensor of ``dtype``."""
        if isinstance(d, int):
            return self.const(np.array(d, np_dtype(dtype)), hint="n")
        return self.cast(self.op("Squeeze", [self.dim(d)], hint="n"), dtype)


def _schema(op_type: str, opset: int, domain: str):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def _bind_inputs(schema, inputs):
    """Pairs (formal parameter, actual name); a variadic last formal takes the rest."""
    formals = list(schema.inputs)
    for i, actual in enumerate(inputs):
        yield (formals[min(i, len(formals) - 1)], actual)


def to_tensor_proto(arr: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def value_info(name: str, dtype: int, shape) -> onnx.ValueInfoProto:
    dims = [d if isinstance(d, int) else str(d) for d in shape]
    return helper.make_tensor_value_info(name, dtype, dims)
