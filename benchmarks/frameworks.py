"""The performance targets of issue 5, measured side by side in one process: llvm against NumPy,
PyTorch eager and ONNX Runtime, 2 threads everywhere, float32.

Sections (``--only`` picks one):
  mini-fwd    BERT-mini forward (MLM + NSP logits), batch 8, seq 128: llvm on the level-2 optimized
              graph (also with the generic LayerNorm rows instead of the one-kernel ones, issue 12)
              and on the graph as traced, numpy, PyTorch eager, ONNX Runtime on our export, and
              ONNX Runtime with its transformer optimizer on a torch.onnx export.
  tiny-fwd    BERT-tiny forward, batch 1, seq 128 (the zoo's max_position raised to 128): llvm,
              llvm with the generic LayerNorm rows instead of the one-kernel ones (issue 12), ONNX
              Runtime on our export and with its transformer optimizer, PyTorch eager.
  mini-train  BERT-mini MLM + NSP training step with AdamW, batch 8, seq 128: llvm on the train-step
              graph (graphdsl.optim.make_train_step of the level-2 optimized loss graph) against
              PyTorch eager forward + backward + AdamW step.
  compile     BERT-base forward (level-2 optimized) compiled for llvm: cold (an empty compile cache),
              from the on-disk cache in a new process (after importing tvm, timed apart) and in this
              one (the in-process cache cleared), and from the in-process cache.

PyTorch runs transformers' BertForPreTraining with the SAME weights as ours (models/hf.py
hf_state_dict) and dropout off; every target's outputs are checked against the NumPy reference.
Each target is warmed up, then timed in blocks of back-to-back calls, the blocks of the targets
taking turns (calls alternating one by one measure OpenBLAS's spinning worker threads more than
the runtime). Latencies are medians in ms. The whole run uses a fresh compile cache, removed at
the end, so the llvm build times printed are cold. The models have the zoo's 647-word vocabulary
unless ``--vocab`` says otherwise (30522 is bert-base-uncased's).

On 2 cores any other busy process distorts the figures (PyTorch's and OpenBLAS's threads wait for
each other by spinning, and collapse first), so each section's heading says what share of the CPUs
other processes used while it timed (from /proc/stat) and flags the section as noisy above 5%.

    .venv/bin/python benchmarks/frameworks.py [--reps 15] [--only mini-fwd|tiny-fwd|mini-train|compile]
                                              [--vocab N] [--blocks N]
"""
from __future__ import annotations

import os

THREADS = 2
for _var in ("TVM_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)   # before numpy, torch and tvm are imported

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import backends  # noqa: E402
import models  # noqa: E402
import passes  # noqa: E402
from graphdsl.optim import AdamW, make_train_step, zero_state  # noqa: E402
from models.hf import hf_state_dict  # noqa: E402

BLOCKS = 3
LR, WEIGHT_DECAY = 1e-4, 0.01
ROWS: list[tuple[str, str, float | None, str]] = []   # (section, target, median ms, note)
RATIOS: list[tuple[str, float | None, str]] = []      # (what, value, target)
OTHER_LOAD: dict[str, float] = {}                     # section -> share of the CPUs others used


# -- noise: how busy the machine was with other processes -----------------------------------------
def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes have used, CPU seconds this one and its children have used), or
    None where /proc/stat is missing."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own


def note_other_load(section: str, before: tuple[float, float] | None, t0: float) -> None:
    """Note in OTHER_LOAD the share of the machine's CPUs that other processes used since
    ``before`` (a cpu_seconds() taken at perf_counter() ``t0``)."""
    after, wall = cpu_seconds(), time.perf_counter() - t0
    if before and after:
        other = (after[0] - before[0]) - (after[1] - before[1])
        OTHER_LOAD[section] = max(0.0, other / (wall * (os.cpu_count() or 1)))


# -- timing ---------------------------------------------------------------------------------------
def time_side_by_side(section: str, targets: dict[str, callable], reps: int) -> dict[str, float]:
    """Median seconds per call of each target; each runs ``reps`` timed calls in BLOCKS blocks,
    every block after one untimed call, the targets' blocks taking turns in a rotating order. Notes in OTHER_LOAD the
    share of the CPUs other processes used meanwhile."""
    before, t0 = cpu_seconds(), time.perf_counter()
    times = {k: [] for k in targets}
    per_block = max(1, -(-reps // BLOCKS))
    names = list(targets)
    for block in range(BLOCKS):
        # the order rotates each block: a runtime whose threads still spin after its turn (ONNX
        # Runtime, PyTorch) then slows every other target's first calls alike, not always the same one
        for name in names[block % len(names):] + names[:block % len(names)]:
            fn = targets[name]
            fn()
            for _ in range(per_block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    note_other_load(section, before, t0)
    return {k: statistics.median(v) for k, v in times.items()}


def timed_build(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def max_diff(got: dict, want: dict, names: dict[str, str]) -> float:
    """Largest absolute difference over the outputs paired by ``names`` (ours -> theirs)."""
    return max(float(np.abs(np.asarray(got[theirs]) - want[ours]).max()) for ours, theirs in names.items())


def record(section: str, medians: dict[str, float], notes: dict[str, str]) -> None:
    for name, s in medians.items():
        ROWS.append((section, name, 1e3 * s, notes.get(name, "")))


def ratio(what: str, num: float | None, den: float | None, target: str) -> None:
    RATIOS.append((what, None if num is None or den is None else num / den, target))


# -- the models -----------------------------------------------------------------------------------
def zoo_model(name: str, seq: int, vocab: int | None = None):
    """(spec, config, module, params) of a zoo BERT with dropout off, room for ``seq`` tokens and
    ``vocab`` words (default: the zoo's, the built-in corpus vocabulary)."""
    spec = models.get(name)
    config = dataclasses.replace(spec.config, dropout=0.0, seq_len=seq,
                                 max_position=max(spec.config.max_position, seq),
                                 vocab_size=vocab or spec.config.vocab_size)
    module = spec.build(config)
    return spec, config, module, module.init(seed=0)


def generic_layer_norm_build(graph):
    """``graph`` for llvm with the one-kernel LayerNorm rows (kernels/norm.py) disabled, so both
    norms take their generic lowering (uncached: the cache key does not know the rows)."""
    from backends.tvm.rules.fused import add_layer_norm_kernel
    from backends.tvm.rules.nn import layer_norm_kernel
    from backends.tvm.table import TVM
    with TVM.disabled(layer_norm_kernel, add_layer_norm_kernel):
        return backends.compile(graph, "llvm", cache=False)


def torch_model(config, params, attention: str | None = None):
    """transformers' BertForPreTraining with our weights (hf_state_dict), dropout off;
    ``attention`` picks transformers' attention implementation (default: its own choice, sdpa)."""
    import torch
    import transformers
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position, type_vocab_size=config.type_vocab_size,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=config.layer_norm_eps,
        hidden_act="gelu")
    model = transformers.BertForPreTraining(hf_config)
    state = {k: torch.from_numpy(np.array(v)) for k, v in hf_state_dict(params, config).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not line up: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if attention is not None:
        model.set_attn_implementation(attention)
    return model


def torch_inputs(batch: dict) -> dict:
    import torch
    return {k: torch.from_numpy(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}


def ort_session(path: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_transformer_optimized(config, params, batch, workdir: Path):
    """ONNX Runtime with its BERT fusions on a torch.onnx (TorchScript) export of the PyTorch model;
    returns (callable, fused operator counts). The export uses transformers' "eager" attention, the
    pattern ORT's Attention fusion recognizes (it finds none in the sdpa export)."""
    import torch
    from onnxruntime.transformers import optimizer
    model = torch_model(config, params, attention="eager").eval()
    inputs = torch_inputs(batch)
    raw, fused = workdir / "hf_bert.onnx", workdir / "hf_bert_fused.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]   # BertForPreTraining.forward's order
    with torch.no_grad():
        torch.onnx.export(model, tuple(inputs[k] for k in names), str(raw), input_names=names,
                          output_names=["prediction_logits", "seq_relationship_logits"],
                          dynamic_axes={k: {0: "batch", 1: "seq"} for k in names}, opset_version=17,
                          dynamo=False)
    opt = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config.num_heads,
                                   hidden_size=config.hidden_size, opt_level=1, use_gpu=False)
    opt.save_model_to_file(str(fused))
    fusions = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    session = ort_session(str(fused))
    feed = {k: inputs[k].numpy() for k in names}
    return (lambda: session.run(None, feed)), fusions


# -- sections -------------------------------------------------------------------------------------
def forward_section(section: str, name: str, batch_size: int, seq: int, reps: int, full: bool,
                    workdir: Path, vocab: int | None) -> None:
    import torch
    spec, config, module, params = zoo_model(name, seq, vocab)
    graph = spec.forward(module.eval())
    optimized, passes_s = timed_build(lambda: passes.optimize(graph, level=2))
    batch = {k: v for k, v in spec.batch(config, np.random.default_rng(0), batch_size).items()
             if k in graph.inputs}
    feed = {**batch, **params}
    want = backends.compile(graph, "numpy")(feed)
    outs = {"mlm_logits": "mlm_logits", "nsp_logits": "nsp_logits"}

    exes, notes, build = {}, {}, {}
    exes["llvm (passes level 2)"], build["llvm (passes level 2)"] = timed_build(
        lambda: backends.compile(optimized, "llvm"))
    notes["llvm (passes level 2)"] = f"passes {passes_s:.2f} s"
    # issue 12: the one-kernel LayerNorms against the generic rows they replace
    exes[GENERIC_LN], build[GENERIC_LN] = timed_build(lambda: generic_layer_norm_build(optimized))
    notes[GENERIC_LN] = "the layer_norm/add_layer_norm kernel rows disabled"
    if full:
        exes["llvm (no passes)"], build["llvm (no passes)"] = timed_build(lambda: backends.compile(graph, "llvm"))
        exes["numpy"], build["numpy"] = timed_build(lambda: backends.compile(graph, "numpy"))
    exes["onnxruntime (our export)"], build["onnxruntime (our export)"] = timed_build(
        lambda: backends.compile(optimized, "onnxruntime", threads=THREADS))
    notes["onnxruntime (our export)"] = "weights are graph inputs"
    if full:
        k = "onnxruntime (our export, contrib ops)"
        exes[k], build[k] = timed_build(
            lambda: backends.compile(optimized, "onnxruntime", threads=THREADS, contrib_ops=True))
        notes[k] = "MultiHeadAttention, weights are graph inputs"
    targets = {}
    for k, exe in exes.items():
        notes[k] = ", ".join(x for x in (notes.get(k, ""), f"build {build[k]:.1f} s",
                                         f"max|diff| {max_diff(exe(feed), want, outs):.1e}") if x)
        targets[k] = (lambda exe=exe: exe(feed))

    torch.set_num_threads(THREADS)
    model = torch_model(config, params).eval()
    tin = torch_inputs(batch)
    with torch.inference_mode():
        got = {k: v.numpy() for k, v in model(**tin).items()}

    def torch_forward():
        with torch.inference_mode():
            model(**tin)
    tname = f"pytorch eager ({model.config._attn_implementation} attention)"
    targets[tname] = torch_forward
    hf_outs = {"mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits"}
    notes[tname] = f"same weights, max|diff| {max_diff(got, want, hf_outs):.1e}"
    fused = "onnxruntime (transformer optimizer)"
    try:
        fn, fusions = ort_transformer_optimized(config, params, batch, workdir)
        got = dict(zip(hf_outs.values(), fn()))
        targets[fused] = fn
        notes[fused] = f"torch.onnx export, fused {fusions}, max|diff| {max_diff(got, want, hf_outs):.1e}"
    except Exception as e:   # optional: say why and go on
        ROWS.append((section, fused, None, f"unavailable: {type(e).__name__}: {str(e).strip()[:120]}"))

    medians = time_side_by_side(section, targets, reps)
    record(section, medians, notes)
    llvm = medians["llvm (passes level 2)"]
    ratio(f"{section}: llvm / llvm with the generic LayerNorm", llvm, medians[GENERIC_LN], "")
    ratio(f"{section}: llvm / pytorch eager", llvm, medians[tname], "<= 1.0")
    if full:
        ratio(f"{section}: llvm / onnxruntime (transformer optimizer)", llvm, medians.get(fused), "<= 1.5")
        ratio(f"{section}: llvm / numpy", llvm, medians["numpy"], "")
    else:
        ratio(f"{section}: llvm / onnxruntime (our export)", llvm, medians["onnxruntime (our export)"], "<= 1.0")
        ratio(f"{section}: llvm with the generic LayerNorm / onnxruntime (our export)", medians[GENERIC_LN],
              medians["onnxruntime (our export)"], "")
        ratio(f"{section}: llvm / onnxruntime (transformer optimizer)", llvm, medians.get(fused), "<= 1.0")


def train_section(reps: int, vocab: int | None) -> None:
    import torch
    section = TRAIN
    spec, config, module, params = zoo_model("bert-mini", 128, vocab)
    loss_graph = passes.optimize(spec.loss(module.train()), level=2)
    step_graph = make_train_step(loss_graph, AdamW(lr=LR, weight_decay=WEIGHT_DECAY))
    batch = spec.batch(config, np.random.default_rng(0), 8)
    feed = {**batch, **params, **{f"state/{k}": v for k, v in zero_state(step_graph).items()}}
    llvm, build_s = timed_build(lambda: backends.compile(step_graph, "llvm"))
    want = backends.compile(loss_graph, "numpy")({**batch, **params})["loss"]
    ours = float(llvm(feed)["loss"])

    torch.set_num_threads(THREADS)
    model = torch_model(config, params).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    tin = torch_inputs(batch)
    mlm_labels, nsp_labels = torch.from_numpy(batch["mlm_labels"]), torch.from_numpy(batch["nsp_labels"])

    def torch_step():
        out = model(**tin, labels=mlm_labels, next_sentence_label=nsp_labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)
    with torch.no_grad():
        theirs = float(model(**tin, labels=mlm_labels, next_sentence_label=nsp_labels).loss)

    medians = time_side_by_side(section, {"llvm (make_train_step, passes level 2)": lambda: llvm(feed),
                                 "pytorch eager (fwd + bwd + AdamW)": torch_step}, reps)
    record(section, medians, {
        "llvm (make_train_step, passes level 2)": f"build {build_s:.1f} s, loss {ours:.4f} (numpy {want:.4f})",
        "pytorch eager (fwd + bwd + AdamW)": f"same weights, first loss {theirs:.4f}"})
    ratio(f"{section}: llvm / pytorch eager", medians["llvm (make_train_step, passes level 2)"],
          medians["pytorch eager (fwd + bwd + AdamW)"], "<= 1.0")


def bert_base_forward():
    """(graph, optimized graph, trace s, passes s) of the zoo's BERT-base forward."""
    spec = models.get("bert-base")
    module = spec.build(dataclasses.replace(spec.config, dropout=0.0))
    graph, trace_s = timed_build(lambda: spec.forward(module.eval()))
    optimized, passes_s = timed_build(lambda: passes.optimize(graph, level=2))
    return graph, optimized, trace_s, passes_s


def child_compile() -> None:
    """Run in a new process by compile_section: import tvm, compile BERT-base from the disk cache,
    print the seconds of each and the cache counters as JSON."""
    import json
    t0 = time.perf_counter()
    import tvm  # noqa: F401
    import backends.tvm  # noqa: F401
    from backends.tvm import cache
    import_s = time.perf_counter() - t0
    _, optimized, _, _ = bert_base_forward()
    exe, seconds = timed_build(lambda: backends.compile(optimized, "llvm"))
    print(json.dumps({"seconds": seconds, "stats": cache.STATS, "import_tvm": import_s}))


def compile_in_new_process(cache_root: str) -> tuple[float, dict, float, float]:
    """(compile s, cache counters, import tvm s, whole process s) of child_compile in a fresh
    interpreter."""
    import json
    import subprocess
    code = "import frameworks; frameworks.child_compile()"
    env = {**os.environ, "GRAPHDSL_CACHE_DIR": cache_root,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])])}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    total = time.perf_counter() - t0
    doc = json.loads(out.strip().splitlines()[-1])
    return doc["seconds"], doc["stats"], doc["import_tvm"], total


def compile_section() -> None:
    from backends.tvm import cache
    section = COMPILE
    graph, optimized, trace_s, passes_s = bert_base_forward()
    cache_root = tempfile.mkdtemp(prefix="graphdsl-cache-")
    old = os.environ.get("GRAPHDSL_CACHE_DIR")
    os.environ["GRAPHDSL_CACHE_DIR"] = cache_root
    try:
        before, start = dict(cache.STATS), (cpu_seconds(), time.perf_counter())
        _, cold = timed_build(lambda: backends.compile(optimized, "llvm"))
        stats = {k: cache.STATS[k] - before[k] for k in before}
        child, child_stats, import_s, child_total = compile_in_new_process(cache_root)
        cache._MEMORY.clear()
        _, disk = timed_build(lambda: backends.compile(optimized, "llvm"))
        _, memory = timed_build(lambda: backends.compile(optimized, "llvm"))
        note_other_load(section, *start)
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
        if old is None:
            os.environ.pop("GRAPHDSL_CACHE_DIR", None)
        else:
            os.environ["GRAPHDSL_CACHE_DIR"] = old
    ROWS.append((section, "trace + passes level 2", 1e3 * (trace_s + passes_s),
                 f"trace {trace_s:.2f} s, passes {passes_s:.2f} s"))
    ROWS.append((section, "compile, cold (empty cache)", 1e3 * cold, f"cache counters {stats}"))
    ROWS.append((section, "compile, disk cache, new process", 1e3 * child,
                 f"after importing tvm and backends.tvm ({import_s:.1f} s); cache counters {child_stats}; "
                 f"the whole process {child_total:.1f} s"))
    ROWS.append((section, "compile, disk cache, this process", 1e3 * disk, "in-process cache cleared"))
    ROWS.append((section, "compile, in-process cache", 1e3 * memory, ""))
    RATIOS.append((f"{section}: cold compile, s", cold, "< 60"))
    RATIOS.append((f"{section}: compile from the disk cache (new process), s", child, "< 1"))


# -- report ---------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch
    import transformers
    import tvm
    return (f"{cpu}, {os.cpu_count()} CPUs visible, {THREADS} threads per runtime; numpy {np.__version__}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, tvm {tvm.__version__}, python {platform.python_version()}")


def print_report() -> None:
    width = max(len(r[1]) for r in ROWS)
    section = None
    for sec, target, ms, note in ROWS:
        if sec != section:
            load = OTHER_LOAD.get(sec)
            noisy = "" if load is None else f"   (other processes used {100 * load:.0f}% of the CPUs meanwhile" + (
                "; NOISY, rerun on an idle machine)" if load > 0.05 else ")")
            print(f"\n{sec}{noisy}")
            section = sec
        value = "       -" if ms is None else f"{ms:9.2f} ms" if ms < 10 else f"{ms:9.1f} ms"
        print(f"  {target:<{width}} {value}  {note}")
    print("\nRATIOS (issue 5 targets)")
    for what, value, target in RATIOS:
        shown = "n/a" if value is None else f"{value:.2f}"
        verdict = ""
        if value is not None and target:
            op, bound = target.split()
            ok = value <= float(bound) if op == "<=" else value < float(bound)
            verdict = "met" if ok else "NOT met"
        print(f"  {what:<58} {shown:>7}  {('target ' + target) if target else '':<12} {verdict}")


GENERIC_LN = "llvm (passes level 2, generic LayerNorm)"
SECTIONS = ("mini-fwd", "tiny-fwd", "mini-train", "compile")
TRAIN, COMPILE = "bert-mini train b8 s128", "bert-base compile (llvm)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15,
                        help="timed calls per target (BERT-tiny: three times as many, training: half)")
    parser.add_argument("--only", choices=SECTIONS, help="run one section")
    parser.add_argument("--blocks", type=int, default=BLOCKS,
                        help=f"blocks each target's timed calls are split in, taking turns (default {BLOCKS}); "
                             "more blocks average out slow drifts of a shared machine")
    parser.add_argument("--vocab", type=int, help="vocabulary size of the BERT-mini/tiny models "
                        "(default: the zoo's 647-word built-in vocabulary; 30522 is bert-base-uncased's)")
    args = parser.parse_args()
    globals()["BLOCKS"] = max(1, args.blocks)   # read by time_side_by_side

    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(machine())
    chosen = [args.only] if args.only else list(SECTIONS)
    workdir = Path(tempfile.mkdtemp(prefix="graphdsl-bench-"))
    os.environ["GRAPHDSL_CACHE_DIR"] = str(workdir / "cache")   # cold builds, nothing left behind
    t0 = time.perf_counter()
    try:
        if "mini-fwd" in chosen:
            forward_section("bert-mini forward b8 s128", "bert-mini", 8, 128, args.reps, True, workdir,
                            args.vocab)
        if "tiny-fwd" in chosen:
            forward_section("bert-tiny forward b1 s128", "bert-tiny", 1, 128, 3 * args.reps, False, workdir,
                            args.vocab)
        if "mini-train" in chosen:
            train_section(max(6, args.reps // 2), args.vocab)
        if "compile" in chosen:
            compile_section()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
