"""What an edit that changes no computation costs the next compile: a comment added to the model file.

    python benchmarks/cache_edit.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/cache_edit.py

Writes a model file into a temporary directory, compiles its train step for llvm in a fresh
process with an empty compile cache, adds a comment block above the model (every source line
moves), and compiles again in another fresh process. Prints both times and whether the second was
a cache hit. Run it against another checkout with PYTHONPATH=that/checkout to compare.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MODEL = '''
import graphdsl as gd
from graphdsl import nn, ops
{comment}

class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 64)
        self.encoder = nn.TransformerEncoder(2, d_model=64, n_heads=4, d_ff=128, dropout=0.0)
        self.head = nn.Linear(64, 4)

    def forward(self, ids, labels):
        logits = self.head(self.encoder(self.embed(ids))[:, 0])
        return {{"loss": ops.cross_entropy(logits, labels), "logits": logits}}


def build():
    model = Classifier()
    return gd.trace(model, params=model, ids="i64[batch,32]", labels="i64[batch]"), model.init(seed=0)
'''

COMPILE = textwrap.dedent('''
    import importlib.util, json, sys, time
    spec = importlib.util.spec_from_file_location("model", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    import backends
    from backends.tvm import cache
    from graphdsl.optim import AdamW, make_train_step
    graph, _ = mod.build()
    step = make_train_step(graph, AdamW(lr=1e-3), clip_norm=1.0)
    import tvm  # noqa: F401  (importing TVM, 1-2 s, is not the compile's)
    t0 = time.perf_counter()
    backends.compile(step, "llvm")
    print(json.dumps({"seconds": time.perf_counter() - t0, "compiles": cache.STATS["compiles"],
                      "disk_hits": cache.STATS["disk_hits"]}))
''')


def compile_once(path: Path, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", COMPILE, str(path)], capture_output=True, text=True, env=env,
                          cwd=path.parent)   # (not this checkout's folder: PYTHONPATH decides which code runs)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    import graphdsl
    print(f"graphdsl from {Path(graphdsl.__file__).parents[1]}")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        env = {**os.environ, "GRAPHDSL_CACHE_DIR": str(root / "cache")}
        path = root / "model.py"
        path.write_text(MODEL.format(comment=""))
        first = compile_once(path, env)
        path.write_text(MODEL.format(comment="# a comment\n# that moves every line of the model down\n"))
        second = compile_once(path, env)
    hit = second["compiles"] == 0 and second["disk_hits"] == 1
    print(f"first compile (empty cache): {first['seconds']:.2f} s")
    print(f"after adding a comment:      {second['seconds']:.2f} s ({'cache hit' if hit else 'recompiled'})")


if __name__ == "__main__":
    main()
