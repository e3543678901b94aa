"""The Trainer: its updates are the optimizer's, its step graph is fused by the passes (and
trains like the traced one), resume is exact, logs are JSON lines, the best evaluation's
parameters are kept, checkpoints load back or fail with a clear message. The decoding steps of
GPT and seq2seq run the passes too. (Resume's refusals: tests/test_trainer_resume.py.)"""
import json

import numpy as np
import pytest

import backends
import graphdsl as gd
import models
from graphdsl import nn, ops
from graphdsl.errors import GraphDSLError
from graphdsl.optim import SGD, AdamW, WarmupCosine
from models import gpt
from models import seq2seq as s2s
from models.data import load_tokenizer
from models.decoding import greedy
from models.trainer import Trainer, spec_batches

W_TRUE = np.array([[1.5], [-2.0], [0.5]], np.float32)


def linear_problem():
    """A linear regression loss graph, its module and a batch function ``step -> batch``."""
    lin = nn.Linear(3, 1)
    graph = gd.trace(lambda x, y: {"loss": ops.mse(lin(x), y)}, params=lin, name="linreg",
                     x="f32[n,3]", y="f32[n,1]")

    def batch(step):
        x = np.random.default_rng([0, step]).normal(size=(8, 3)).astype(np.float32)
        return {"x": x, "y": x @ W_TRUE + np.float32(0.5)}
    return lin, graph, batch


def test_updates_are_plain_sgd():
    lin, graph, batch = linear_problem()
    params = lin.init(seed=0)
    trainer = Trainer(graph, params, SGD(lr=0.1), progress=False)
    trainer.fit(batch, steps=3)
    w, b = params["weight"].astype(np.float64), params["bias"].astype(np.float64)
    for step in range(3):   # gradient descent on mean((x w + b - y)^2), by hand
        x, y = (a.astype(np.float64) for a in batch(step).values())
        r = x @ w + b - y
        w, b = w - 0.1 * 2 * x.T @ r / r.size, b - 0.1 * 2 * r.sum(0) / r.size
    np.testing.assert_allclose(trainer.params["weight"], w, rtol=1e-5)
    np.testing.assert_allclose(trainer.params["bias"], b, rtol=1e-5)
    assert trainer.step == 3 and len(trainer.losses) == 3


def test_resume_continues_the_same_loss_curve_exactly(tmp_path):
    spec = models.get("bert-tiny")
    assert spec.config.dropout > 0   # dropout masks depend on the step: resume must get them right

    def make(**kw):
        return dict(optimizer=AdamW(lr=2e-3), schedule=WarmupCosine(2, 6), clip_norm=1.0, progress=False, **kw)

    batches = spec_batches(spec, 8, seed=3)
    whole = Trainer(spec, None, **make())
    whole.fit(batches, steps=6)

    first = Trainer(spec, None, **make())
    first.fit(batches, steps=3)
    first.save(tmp_path / "ckpt")
    resumed = Trainer.load(tmp_path / "ckpt", spec, **make())
    assert resumed.step == 3
    resumed.fit(batches, steps=3)

    assert resumed.losses == whole.losses          # bit for bit, the three before the save included
    assert len(set(whole.losses)) == 6
    for k, v in whole.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)


def test_metrics_are_logged_as_json_lines(tmp_path):
    lin, graph, batch = linear_problem()
    log = tmp_path / "train.jsonl"
    trainer = Trainer(graph, lin.init(seed=0), SGD(lr=0.05), log_path=log, progress=True)
    trainer.fit(batch, steps=4, eval_fn=lambda t: 0.25, eval_every=2)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["loss"] for r in train] == trainer.losses
    assert all(r["lr"] == pytest.approx(0.05) and r["samples_per_s"] > 0 and r["time_s"] > 0 for r in train)
    assert evals == [{"kind": "eval", "step": s, "eval_loss": 0.25} for s in (2, 4)]
    assert trainer.losses[-1] < trainer.losses[0]


@pytest.mark.parametrize("mode, best_step", [("min", 4), ("max", 2)])
def test_best_checkpoint_by_validation_metric(tmp_path, mode, best_step):
    lin, graph, batch = linear_problem()
    scores = iter([3.0, 1.0, 2.0])
    seen = {}

    def eval_fn(trainer):
        seen[trainer.step] = {k: v.copy() for k, v in trainer.params.items()}
        return {"val": next(scores)}

    trainer = Trainer(graph, lin.init(seed=0), SGD(lr=0.05), progress=False)
    trainer.fit(batch, steps=6, eval_fn=eval_fn, eval_every=2, metric="val", mode=mode,
                best_path=tmp_path / "best")
    assert trainer.best == {"step": best_step, "metric": "val", "value": {2: 3.0, 4: 1.0}[best_step]}
    best = Trainer.load(tmp_path / "best", graph, SGD(lr=0.05), progress=False)
    assert best.step == best_step
    for k, v in seen[best_step].items():
        np.testing.assert_array_equal(best.params[k], v)
        np.testing.assert_array_equal(trainer.best_params[k], v)
    assert not np.array_equal(trainer.params["weight"], seen[best_step]["weight"])
    trainer.restore_best()
    np.testing.assert_array_equal(trainer.params["weight"], seen[best_step]["weight"])


def test_loss_evaluator_averages_the_eval_mode_loss():
    lin, graph, batch = linear_problem()
    trainer = Trainer(graph, lin.init(seed=0), SGD(lr=0.05), progress=False)
    batches = [batch(100), batch(101)]
    result = trainer.loss_evaluator(batches, graph)(trainer)
    w, b = trainer.params["weight"], trainer.params["bias"]
    want = np.mean([np.mean((bt["x"] @ w + b - bt["y"]) ** 2) for bt in batches])
    assert result == {"eval_loss": pytest.approx(want, rel=1e-5)}

    spec = models.get("bert-tiny")
    bert = Trainer(spec, None, AdamW(lr=1e-3), progress=False)
    out = bert.loss_evaluator([spec.example_batch(4, seed=s) for s in (0, 1)])(bert)
    assert set(out) == {"eval_loss", "eval_mlm_loss", "eval_nsp_loss"}
    assert out["eval_loss"] == pytest.approx(out["eval_mlm_loss"] + out["eval_nsp_loss"], rel=1e-6)
    assert bert.module.training   # the evaluator traced in eval mode and put the module back


def test_iterable_and_fixed_batches():
    lin, graph, batch = linear_problem()
    trainer = Trainer(graph, lin.init(seed=0), SGD(lr=0.05), progress=False)
    assert len(trainer.fit([batch(i) for i in range(3)])) == 3
    assert len(trainer.fit(iter([batch(i) for i in range(5)]), steps=2)) == 2
    assert len(trainer.fit(batch(0), steps=2)) == 2            # one fixed batch, twice
    assert trainer.step == 7


def test_safetensors_checkpoint(tmp_path):
    pytest.importorskip("safetensors")
    lin, graph, batch = linear_problem()
    trainer = Trainer(graph, lin.init(seed=0), AdamW(lr=0.01), progress=False)
    trainer.fit(batch, steps=2)
    trainer.save(tmp_path / "st")                          # an npz snapshot, then a safetensors one
    trainer.fit(batch, steps=1)
    trainer.save(tmp_path / "st", format="safetensors")
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["step-00000002", "step-00000003"]
    assert sorted(p.name for p in (tmp_path / "st" / "step-00000003").iterdir()) == [
        "manifest.json", "optimizer.safetensors", "params.safetensors", "trainer.json"]
    loaded = Trainer.load(tmp_path / "st", graph, AdamW(lr=0.01), progress=False)
    assert loaded.step == 3
    for k, v in trainer.runner.state.items():
        np.testing.assert_array_equal(loaded.runner.state[k], v)
    np.testing.assert_array_equal(loaded.params["weight"], trainer.params["weight"])


def test_clear_errors(tmp_path):
    lin, graph, batch = linear_problem()
    trainer = Trainer(graph, lin.init(seed=0), AdamW(lr=0.01), progress=False)
    with pytest.raises(GraphDSLError, match="say how many steps"):
        trainer.fit(batch)
    with pytest.raises(GraphDSLError, match="needs its initial params"):
        Trainer(graph, None, SGD(lr=0.1))
    with pytest.raises(GraphDSLError, match="no checkpoint at"):
        Trainer.load(tmp_path / "nothing", graph, SGD(lr=0.1))
    with pytest.raises(GraphDSLError, match="no 'accuracy'"):
        trainer.fit(batch, steps=1, eval_fn=lambda t: {"loss": 1.0}, metric="accuracy")
    with pytest.raises(GraphDSLError, match="unknown checkpoint format"):
        trainer.save(tmp_path / "x", format="pickle")
    trainer.save(tmp_path / "ckpt")
    with pytest.raises(GraphDSLError, match="holds AdamW state, got a SGD optimizer"):
        Trainer.load(tmp_path / "ckpt", graph, SGD(lr=0.1))
    wide = nn.Linear(4, 1)
    other = gd.trace(lambda x, y: {"loss": ops.mse(wide(x), y)}, params=wide, x="f32[n,4]", y="f32[n,1]")
    with pytest.raises(GraphDSLError, match=r"parameters does not fit this train step: mis-shaped \['weight'\]"):
        Trainer.load(tmp_path / "ckpt", other, AdamW(lr=0.01))


# -- the compiler's path: fuse the forward, then differentiate ------------------------------------
def attention_ops(graph):
    counts = graph.op_counts()
    return {k: counts.get(k, 0) for k in ("attention", "attention_grad", "softmax")}


def test_default_trainer_fuses_attention_and_trains_like_the_traced_graph():
    """bert-tiny with dropout: the default step graph has 2 fused attention ops (and their
    gradients), no attention softmax, and 5 steps give opt_level=0's losses and parameters."""
    spec = models.get("bert-tiny")
    assert spec.config.dropout > 0 and spec.attention_blocks == 2

    def make(level):
        kw = {} if level is None else {"opt_level": level}
        return Trainer(spec, None, AdamW(lr=2e-3), schedule=WarmupCosine(1, 5), clip_norm=1.0, seed=4,
                       progress=False, **kw)
    fused, traced = make(None), make(0)
    assert fused.opt_level == 2
    assert attention_ops(fused.step_graph) == {"attention": 2, "attention_grad": 6, "softmax": 2}
    assert attention_ops(traced.step_graph) == {"attention": 0, "attention_grad": 0, "softmax": 4}
    # the forward keeps no softmax; the step's two are the cross-entropy gradients (MLM, NSP), not attention
    assert fused.fused_ops["attention"] == 2 and fused.pass_report.summary("attention")["softmax_left"] == 0
    assert traced.loss_graph.op_counts()["softmax"] == 2
    assert traced.fused_ops == {} and traced.pass_report.passes == [] and traced.pass_report.graph is traced.loss_graph

    batches = spec_batches(spec, 8, seed=2)
    fused.fit(batches, steps=5)
    traced.fit(batches, steps=5)
    np.testing.assert_allclose(fused.losses, traced.losses, rtol=1e-5)
    for k, v in traced.params.items():
        np.testing.assert_allclose(fused.params[k], v, rtol=1e-4, atol=1e-6, err_msg=k)


def test_fused_attention_draws_the_same_dropout_bits_as_the_traced_graph():
    """The forward at one seed: the fused graph's loss is the traced one's (an other seed's differs
    a hundred times more), so the fused op's dropout mask is the dropout op's."""
    spec = models.get("bert-tiny")
    trainer = Trainer(spec, None, SGD(lr=0.0), progress=False)
    traced = backends.compile(trainer.loss_graph, "numpy")
    fused = backends.compile(trainer.pass_report.graph, "numpy")
    feed = {**spec.example_batch(8, seed=1), **trainer.params}
    loss = {s: (float(traced(**feed, seed=np.int32(s))["loss"]), float(fused(**feed, seed=np.int32(s))["loss"]))
            for s in (3, 4)}
    for a, b in loss.values():
        assert a == pytest.approx(b, rel=1e-6, abs=0)
    assert abs(loss[3][0] - loss[4][0]) > 100 * abs(loss[3][0] - loss[3][1])


def test_unknown_opt_level_is_an_error():
    lin, graph, _ = linear_problem()
    with pytest.raises(GraphDSLError, match="unknown optimization level 5"):
        Trainer(graph, lin.init(seed=0), SGD(lr=0.1), opt_level=5)


def noisy(params, seed=0):
    """Large random weights, so that no two tokens' logits tie and greedy's argmax is robust."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in params.items()}


def test_gpt_step_fuses_attention_and_decodes_as_the_traced_graphs():
    spec = models.get("gpt-tiny")
    model = spec.module().eval()
    params = noisy(model.init(0))
    steps = {level: gpt.gpt_step(model, params, opt_level=level) for level in (2, 0)}
    n = spec.attention_blocks
    for exe in (steps[2].prefill, steps[2].decode):
        assert attention_ops(exe.graph) == {"attention": n, "attention_grad": 0, "softmax": 0}
    assert attention_ops(steps[0].decode.graph)["softmax"] == n
    assert sum(a.attrs["causal"] for a in steps[2].decode.graph.nodes if a.op == "attention") == n
    prompt = np.random.default_rng(1).integers(0, spec.config.vocab_size, (3, 4))
    out = {level: greedy(step, prompt, 12) for level, step in steps.items()}
    np.testing.assert_array_equal(out[2], out[0])
    (lp2, _), (lp0, _) = steps[2](prompt, None), steps[0](prompt, None)
    np.testing.assert_allclose(lp2, lp0, rtol=1e-5, atol=1e-5)


def test_seq2seq_step_fuses_attention_and_decodes_as_the_traced_graphs():
    spec = models.get("bart-tiny")
    model = spec.module().eval()
    params = noisy(model.init(0))
    batch = spec.example_batch(3, seed=5)
    steps = {level: s2s.seq2seq_step(model, params, batch["src_ids"], batch["src_mask"], opt_level=level)
             for level in (2, 0)}
    layers = spec.config.n_decoder_layers
    decode = steps[2].decode.graph
    assert attention_ops(decode) == {"attention": 2 * layers, "attention_grad": 0, "softmax": 0}  # self + cross
    assert sum(a.attrs["causal"] for a in decode.nodes if a.op == "attention") == layers
    assert attention_ops(steps[2].prefill.graph)["attention"] == spec.attention_blocks
    assert attention_ops(steps[0].decode.graph) == {"attention": 0, "attention_grad": 0, "softmax": 2 * layers}
    prompts = np.full((3, 1), load_tokenizer().bos_id)
    out = {level: greedy(step, prompts, 8) for level, step in steps.items()}
    np.testing.assert_array_equal(out[2], out[0])
