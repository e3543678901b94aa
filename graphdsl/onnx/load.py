"""Load an ONNX model safely: data only, weights only from inside the model's folder.

An ONNX file is a protobuf message: parsing it runs no code from it (nothing is unpickled or
evaluated). What a hostile file can still try is to make us read other files through its
external-data paths (``../../etc/passwd``, an absolute path, a symlink out of the folder); every
such path is resolved and must stay inside the model's directory. Truncated or corrupt files,
missing opsets and opsets outside the range we import fail with one ``GraphError`` each.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import onnx
from onnx import external_data_helper

from graphdsl.errors import GraphError

MIN_OPSET = 13   # Squeeze/Unsqueeze/ReduceSum take axes as inputs from 13 on; earlier semantics differ


def load_model(source) -> tuple[onnx.ModelProto, str]:
    """``(model, label)`` from a path, bytes or a ModelProto; ``label`` names it in messages."""
    if isinstance(source, onnx.ModelProto):
        model, label, base = source, "<ModelProto>", None
    elif isinstance(source, (bytes, bytearray)):
        model, label, base = _parse(bytes(source), "<bytes>"), "<bytes>", None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise GraphError(f"cannot read ONNX file {label}: {e.strerror or e}") from None
        model, base = _parse(data, label), path.resolve().parent
    else:
        raise GraphError(f"from_onnx takes a path, bytes or an onnx.ModelProto, got {type(source).__name__}")
    _check_opset(model, label)
    _check_einsum_equations(model.graph, label)
    _load_external_data(model, base, label)
    try:
        # inference first: it fills in output shapes that exporters may leave out
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise GraphError(f"malformed ONNX model {label}: {first[:400]}",
                         hint="onnx.checker.check_model rejects it; re-export the model") from None
    return model, label


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:   # protobuf's DecodeError, and friends on garbage input
        raise GraphError(f"{label} is not a valid ONNX file (truncated or corrupt): "
                         f"{type(e).__name__}: {str(e)[:200]}") from None
    if not model.HasField("graph") or not model.opset_import:
        raise GraphError(f"{label} is not a valid ONNX model: it has no graph or no opset",
                         hint="is it an ONNX file? truncated files often parse as empty messages")
    return model


_EINSUM_TERM = re.compile(r"[A-Za-z]*(\.\.\.)?[A-Za-z]*")


def _check_einsum_equations(graph: onnx.GraphProto, label: str) -> None:
    """Refuse a malformed Einsum equation before shape inference sees it: onnx 1.23's
    ``infer_shapes`` never returns on a character outside letters, ',', '->' and one '...' a term."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _check_einsum_equations(attr.g, label)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _check_einsum_equations(g, label)
        if node.op_type != "Einsum" or node.domain not in ("", "ai.onnx"):
            continue
        equation = next((a.s.decode("utf-8", "replace") for a in node.attribute if a.name == "equation"), "")
        sides = equation.replace(" ", "").split("->")
        terms = [t for side in sides for t in side.split(",")]
        if not all(_EINSUM_TERM.fullmatch(t) for t in terms):   # the importer checks the rest
            raise GraphError(f"ONNX Einsum node {node.name!r} in {label} has a malformed equation "
                             f"{equation!r}",
                             hint="terms are letters with at most one '...', separated by ',', "
                                  "with an optional '->' and output term")


def _check_opset(model: onnx.ModelProto, label: str) -> None:
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    version = versions.get("ai.onnx")
    newest = onnx.defs.onnx_opset_version()
    if version is None:
        raise GraphError(f"{label} imports no version of the default ONNX opset")
    if version > newest:
        raise GraphError(f"{label} uses ONNX opset {version}; graphdsl imports opsets up to {newest}",
                         hint="re-export with a supported opset, or convert it with "
                              "onnx.version_converter.convert_version")
    if version < MIN_OPSET:
        changed = sorted(changed_since(model, version))
        if changed:
            shown = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
            raise GraphError(f"{label} uses ONNX opset {version}, and these of its ops changed before opset "
                             f"{MIN_OPSET}, the oldest graphdsl reads: {shown}",
                             hint="re-export with opset 13 or later, or convert it with "
                                  "onnx.version_converter.convert_version")


# Ops whose handler also reads the older definitions, from this opset on: Dropout before 12 took
# its ratio as an attribute and had no training_mode input; without one it is the inference-mode
# identity, which is what the handler gives (a ratio matters in training only)
READS_OLDER = {"Dropout": 7}


def changed_since(model: onnx.ModelProto, version: int) -> set[str]:
    """The default-domain op types of ``model`` whose definition at opset ``version`` is not the one
    in force at MIN_OPSET. A model of an older opset imports when this is empty: each of its ops
    means what it means at opset 13, which the handlers read (And, Or, Not since opset 7, ...)."""
    types = {n.op_type for n in _all_nodes(model.graph) if n.domain in ("", "ai.onnx")}
    changed = set()
    for op_type in types:
        try:
            old = onnx.defs.get_schema(op_type, version).since_version
            new = onnx.defs.get_schema(op_type, MIN_OPSET).since_version
        except onnx.defs.SchemaError:
            changed.add(op_type)    # unknown at that opset: the importer reports it as unsupported
            continue
        if old != new and version < READS_OLDER.get(op_type, MIN_OPSET + 1):
            changed.add(op_type)
    return changed


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def _external_tensors(model: onnx.ModelProto):
    return [t for t in external_data_helper._get_all_tensors(model)
            if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL]


def _load_external_data(model: onnx.ModelProto, base: Path | None, label: str) -> None:
    tensors = _external_tensors(model)
    if not tensors:
        return
    if base is None:
        raise GraphError(f"{label} refers to external data files, which need the model's path",
                         hint="pass the .onnx path instead of the loaded model or its bytes")
    for tensor in tensors:
        info = external_data_helper.ExternalDataInfo(tensor)
        where = _safe_location(base, info.location, tensor.name, label)
        size = where.stat().st_size
        end = (info.offset or 0) + (info.length if info.length is not None else 0)
        if (info.offset or 0) > size or end > size:
            raise GraphError(f"external data of tensor {tensor.name!r} in {label} lies past the end "
                             f"of {where.name} ({size} bytes)")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as e:
        raise GraphError(f"cannot load the external data of {label}: {str(e)[:300]}") from None


def _safe_location(base: Path, location: str, tensor: str, label: str) -> Path:
    """The resolved external-data file, which must exist inside ``base`` (no .., no absolute path,
    no symlink leading out)."""
    if not location or os.path.isabs(location) or Path(location).drive:
        raise GraphError(f"tensor {tensor!r} in {label} points at external data {location!r} "
                         f"outside the model's directory", hint="external data paths must be relative")
    target = (base / location).resolve()
    if os.path.commonpath([str(target), str(base)]) != str(base):
        raise GraphError(f"tensor {tensor!r} in {label} points at external data {location!r} "
                         f"outside the model's directory", hint="refusing to read files outside it")
    if not target.is_file():
        raise GraphError(f"external data file {location!r} of tensor {tensor!r} in {label} is missing")
    return target
