"""Schedules: which loop nests run in parallel, vectorized, register-tiled.

TVM's default CPU pipeline leaves every fused kernel a serial scalar loop nest (a BERT-mini
encoder ran ~50x slower than NumPy). After fusion, ``cpu_schedule_pass`` tries these rules on each
PrimFunc, first match wins, and a rule that fails leaves the function to the next one:

  small       kernels with little static work: left as they are
  matmul      every matmul-like kernel (batched, transposed operands, fused epilogues):
              register tiles of MR x NR accumulated in a local buffer over the whole K axis,
              the NR axis vectorized, tiles spread over the cores; a transposed right operand
              is first packed K-major so the vector loads are contiguous. Measured here: 430
              GFLOP/s on a static [1024,256] @ [256,1024] (2 threads, AVX-512), and as much
              with symbolic rows since build.noalias_shape_funcs (before it, ~150: LLVM could
              not tell the buffers apart and stored the accumulators at every step of k)
  reduction   dlight's CPU rule for softmax / norm shaped kernels (rows in parallel)
  injective   elementwise and layout kernels: the last axis vectorized, the others parallel
  column_sum  reductions over outer axes (bias gradients): rows streamed, output vectorized
  generic     anything else: its leading spatial loops in parallel

GPU: dlight's default rules (Matmul, GEMV, Reduction, GeneralReduction, Fallback).
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.matmul import IterKind, detect_iter_traits, get_reduction_blocks

MR = 8                 # rows of a register tile (its columns are two vectors)
SMALL_WORK = 1 << 14   # loop iterations below which a kernel is left unscheduled
RULE_ATTR = "graphdsl.schedule_rule"   # which rule scheduled a kernel (see build.schedule_report)
# How TVM reports a schedule that does not apply (ScheduleError is a RuntimeError).
RULE_ERRORS = (RuntimeError, ValueError, AssertionError, TypeError, AttributeError, IndexError)


def gpu_schedule_pass(target) -> tvm.transform.Pass:
    """dlight's GPU rules. Its matmul rule stores epilogues as 2-wide vectors, and TVM's CUDA code
    generator declares a vector of bools from an index test (slice_grad, masks) as ``float2``,
    which nvcc rejects; our matmul config is dlight's CUDA one with scalar epilogue stores."""
    from tvm.s_tir import dlight as dl

    class Matmul(dl.gpu.Matmul):
        def get_configs(self, target):
            config = super().get_configs(target)
            config.vector_size = 1
            return config

    rules = [Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]

    def as_function(rule):
        def apply(func):
            return rule.apply(func, target, False)
        apply.rule_name = f"dlight.{type(rule).__name__}"
        return apply

    return _apply_first([as_function(rule) for rule in rules], name="graphdsl_gpu_schedule")


def _rule_name(rule) -> str:
    return rule.rule_name


def cpu_schedule_pass(target) -> tvm.transform.Pass:
    from tvm.s_tir import dlight as dl
    from tvm.target.codegen import llvm_get_vector_width
    reduction = dl.cpu.Reduction()
    bits = llvm_get_vector_width(target)
    bits = bits if bits > 0 else 128

    def reduction_rule(func):
        return reduction.apply(func, target, False)
    reduction_rule.rule_name = "dlight.Reduction"

    def ours(rule):
        def apply(func):
            return rule(func, bits)
        apply.rule_name = rule.__name__.removesuffix("_rule")
        return apply

    rules = [ours(small_rule), ours(matmul_rule), reduction_rule, ours(injective_rule),
             ours(column_sum_rule), ours(generic_rule)]
    return _apply_first(rules, name="graphdsl_cpu_schedule")


def _apply_first(rules, name: str) -> tvm.transform.Pass:
    """A pass scheduling each PrimFunc with the first rule that applies to it; a rule that raises
    is treated as not applying (dlight's own pass would stop the whole build instead)."""
    @tvm.transform.module_pass(opt_level=0, name=name)
    def run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            for rule in rules:
                try:
                    sch = rule(func)
                except RULE_ERRORS:
                    sch = None
                if sch is not None:
                    sch = sch[0] if isinstance(sch, list) else sch
                    done = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                    updates[gv] = done.with_attr(RULE_ATTR, _rule_name(rule))
                    break
        for gv, func in updates.items():
            mod[gv] = func
        return mod
    return run


# -- helpers --------------------------------------------------------------------------------------
def _lanes(dtype, bits: int) -> int:
    """Elements of ``dtype`` in one vector register of ``bits``."""
    return max(bits // tvm.DataType(str(dtype)).bits, 1)


def _extent(sch, loop):
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _blocks(sch):
    return sch.get_child_blocks(get_root_block(sch))


def _is_spatial(sch, block) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def _vectorize_inner(sch, loop, lanes: int) -> None:
    ext = _extent(sch, loop)
    if ext is not None and ext <= lanes:
        if ext > 1:
            sch.vectorize(loop)
        return
    _, inner = sch.split(loop, factors=[None, lanes])
    sch.vectorize(inner)


def _parallel_outer(sch, loops) -> None:
    """Fuse ``loops`` and run them in parallel (a no-op for none)."""
    if loops:
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])


def _inline_spatial(sch, keep) -> None:
    """Inline every spatial block except the outputs and ``keep``, until nothing changes."""
    changed = True
    while changed:
        changed = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(get_root_block(sch))}
        for block in _blocks(sch):
            name = sch.get(block).name_hint
            if name in outputs or name in keep or not _is_spatial(sch, block):
                continue
            try:
                sch.compute_inline(block)
                changed = True
            except RuntimeError:  # s_tir's ScheduleError: this block cannot be inlined
                continue


# -- rules ----------------------------------------------------------------------------------------
def small_rule(func, bits: int):
    """Kernels with a small static amount of work stay plain loops: threads and unrolled tiles
    would cost more than they save, at run time and in LLVM's compile time. Each reduction's
    initialization gets its own loop nest before the update's: with it inside the first reduction
    iteration, LLVM's AVX2 code for a batched float64 matmul fused with a multiply failed its own
    verifier ("Instruction does not dominate all uses"; AVX-512 targets built it)."""
    sch = s_tir.Schedule(func)
    work = 0
    for block in _blocks(sch):
        n = 1
        for loop in sch.get_loops(block):
            ext = _extent(sch, loop)
            if ext is None:
                return None
            n *= ext
        work += n
    if work > SMALL_WORK:
        return None
    for block in _blocks(sch):
        loops = sch.get_loops(block)
        if loops and not _is_spatial(sch, block) and sch.get(block).init is not None:
            sch.decompose_reduction(block, loops[0])
    return sch


def injective_rule(func, bits: int):
    """Elementwise and layout kernels: inline the chain; the last axis vectorized (its own loop, so
    vector lanes stay contiguous), the others fused and in parallel. A short last axis is merged
    with the others into one flat loop instead."""
    sch = s_tir.Schedule(func)
    if not all(_is_spatial(sch, b) for b in _blocks(sch)):
        return None
    _inline_spatial(sch, keep=())
    for block in _blocks(sch):
        loops = sch.get_loops(block)
        if not loops:
            continue
        lanes = _lanes(sch.get(block).writes[0].source.dtype, bits)
        if _bf16_constant(sch, block):
            _parallel_outer(sch, loops)
            continue
        last = _extent(sch, loops[-1])
        if len(loops) > 1 and (last is None or last >= lanes):
            _parallel_outer(sch, loops[:-1])
            _vectorize_inner(sch, loops[-1], lanes)
            continue
        flat = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        outer, inner = sch.split(flat, factors=[None, lanes])
        sch.vectorize(inner)
        sch.parallel(outer)
    return sch


def _bf16_constant(sch, block) -> bool:
    """A bfloat16 block storing a constant (it reads nothing): TVM 0.27's bf16 legalization fails
    on a vectorized store of one (a bfloat16 broadcast into uint16 storage), so it stays scalar."""
    stmt = sch.get(block)
    return str(stmt.writes[0].source.dtype) == "bfloat16" and not stmt.reads


def column_sum_rule(func, bits: int):
    """A reduction over outer axes (a bias gradient: sum over batch and seq of [B, S, N]): walk the
    rows in order, accumulating vectors of the output's last axis; column chunks in parallel."""
    sch = s_tir.Schedule(func)
    _inline_spatial(sch, keep=())
    blocks = _blocks(sch)
    if len(blocks) != 1:
        return None
    block = blocks[0]
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if len(loops) != len(kinds) or tirx.IterVar.CommReduce not in kinds or len(stmt.reads) != 1:
        return None
    # The input's last (contiguous) axis must be a kept one, looped over innermost of those kept.
    last_in = stmt.reads[0].region[-1].min
    spatial = [l for l, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
    reduce = [l for l, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
    inner = [n for n, iv in enumerate(stmt.iter_vars) if iv.var.same_as(last_in)]
    if not inner or kinds[inner[0]] != tirx.IterVar.DataPar or loops[inner[0]] is not spatial[-1]:
        return None
    lanes = _lanes(sch.get(block).writes[0].source.dtype, bits)
    chunk, vec = sch.split(spatial[-1], factors=[None, 4 * lanes])
    sch.reorder(*spatial[:-1], chunk, *reduce, vec)
    _, vec_inner = sch.split(vec, factors=[None, lanes])
    sch.vectorize(vec_inner)
    sch.parallel(spatial[0] if len(spatial) > 1 else chunk)
    init = sch.decompose_reduction(block, reduce[0])
    sch.vectorize(sch.split(sch.get_loops(init)[-1], factors=[None, lanes])[1])
    return sch


def generic_rule(func, bits: int):
    """Anything else: each root block's leading spatial loops in parallel."""
    sch = s_tir.Schedule(func)
    for block in _blocks(sch):
        loops = sch.get_loops(block)
        kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
        if len(loops) != len(kinds):
            return None
        lead = []
        for loop, kind in zip(loops, kinds):
            if kind != tirx.IterVar.DataPar:
                break
            lead.append(loop)
        if len(lead) == len(loops) and len(lead) > 1:
            lead = lead[:-1]  # keep the innermost loop for the vectorizer
        _parallel_outer(sch, lead)
    return sch


def matmul_rule(func, bits: int):
    """A matmul-like reduction C[.., i, j] += A[.., i, k] * B[.., k, j] (any operand layout), with its
    elementwise epilogue, computed in MR x NR register tiles over the whole K axis."""
    sch = s_tir.Schedule(func)
    reductions = get_reduction_blocks(sch, _blocks(sch))
    if reductions is None:
        return None
    main = reductions[0]
    stmt = sch.get(main)
    traits = detect_iter_traits(stmt)
    if traits is None or len(sch.get_loops(main)) != len(stmt.iter_vars):
        return None
    kinds = [t.kind for t in traits[3]]
    n_k = kinds.count(IterKind.kIter_K)   # k, and batch axes a weight gradient sums over
    if kinds[len(kinds) - n_k:] != [IterKind.kIter_K] * n_k:
        return None
    lanes = _lanes(stmt.writes[0].source.dtype, bits)
    nr = 2 * lanes
    b_contiguous = _last_index_is(stmt, traits, read=1, kind=IterKind.kIter_J)

    # Pad the rows and columns to whole tiles when their sizes are not known multiples (symbolic
    # batch and seq): the inner loops then need no bounds checks. Operands that get padded are
    # copied into padded buffers; a transposed B is packed K-major for contiguous vector loads.
    padding = _padding(stmt, kinds, nr)
    if any(p > 1 for p in padding):
        sch.pad_einsum(main, padding)
    stages = [p for p in sch.get_producers(main) if _is_spatial(sch, p)]
    if not b_contiguous:
        b_buf = sch.get(main).reads[1].source
        if not any(w.source.same_as(b_buf) for p in stages for w in sch.get(p).writes):
            stages.append(sch.cache_read(main, 1, "global"))
        sch.transform_layout(main, ("read", 1), lambda *idx: (*idx[:-2], idx[-1], idx[-2]))

    # The epilogue: inline it into the block writing the output; the matmul then accumulates in
    # a local buffer that the compiler keeps in registers.
    _inline_spatial(sch, keep=[sch.get(b).name_hint for b in [main, *stages]])
    consumers = sch.get_consumers(main)
    if len(consumers) > 1:
        return None
    if consumers:
        epilogue = consumers[0]
        sch.set_scope(main, 0, "local")
    else:
        epilogue = sch.cache_write(main, 0, "local")

    # Tile the epilogue's last two loops (rows x columns) and spread the tiles over the cores:
    # by column panels when there is a static number of them (each core keeps its panel of B in
    # cache), else by the outermost loop. Loops are never fused: fusing symbolic extents makes
    # index expressions that TVM can no longer prove affine.
    loops = sch.get_loops(epilogue)
    if len(loops) < 2:
        return None
    *outer, i, j = loops
    i0, i1 = sch.split(i, factors=[None, MR])
    j0, j1 = sch.split(j, factors=[None, nr])
    if _extent(sch, j0) is not None and _extent(sch, j0) > 1:
        sch.reorder(j0, *outer, i0, i1, j1)
        sch.parallel(j0)
        sch.compute_at(main, i0)
    else:
        sch.reorder(*outer, i0, j0, i1, j1)
        sch.parallel(outer[0] if outer else i0)
        sch.compute_at(main, j0)
    _vectorize_inner(sch, j1, lanes)

    # The micro-kernel: k outermost, then the MR rows unrolled and the NR columns vectorized.
    *_, mi, mj = sch.get_loops(main)[:len(sch.get_loops(main)) - n_k]
    mks = sch.get_loops(main)[-n_k:]
    sch.reorder(*mks, mi, mj)
    mj0, mj1 = sch.split(mj, factors=[None, lanes])
    sch.vectorize(mj1)  # before decompose_reduction: TVM checks a vectorized block is a whole reduction
    sch.unroll(mj0)
    sch.unroll(mi)
    init = sch.decompose_reduction(main, mks[0])
    _vectorize_inner(sch, sch.get_loops(init)[-1], lanes)
    for stage in stages:
        loops = sch.get_loops(stage)
        _parallel_outer(sch, loops[:1])
        _vectorize_inner(sch, loops[-1], lanes)
    return sch


def _padding(stmt, kinds, nr: int) -> list[int]:
    """Per block iterator: MR for the row axis and NR for the column axis unless already a multiple."""
    last_i = max(n for n, k in enumerate(kinds) if k == IterKind.kIter_I)
    last_j = max(n for n, k in enumerate(kinds) if k == IterKind.kIter_J)
    out = []
    for n, iv in enumerate(stmt.iter_vars):
        tile = MR if n == last_i else nr if n == last_j else 1
        ext = iv.dom.extent
        static = isinstance(ext, tirx.IntImm)
        out.append(1 if tile == 1 or (static and int(ext) % tile == 0) else tile)
    return out


def _last_index_is(stmt, traits, *, read: int, kind) -> bool:
    """Whether the last index of operand ``read`` is an iterator of ``kind`` (I, J or K)."""
    last = stmt.reads[read].region[-1].min
    return any(iv.var.same_as(last) and t.kind == kind for iv, t in zip(stmt.iter_vars, traits[3]))
