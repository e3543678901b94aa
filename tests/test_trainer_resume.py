"""Resuming a Trainer is exact or refuses: trainer.json records how the run trained (the optimizer
and schedule as data, clip_norm, seed, opt_level, wrt, the step graph's structural hash),
``Trainer.load`` restores what the call leaves out, and a conflicting argument or another
model's loss graph is an error naming both values (a warning with ``allow_override=True``)."""
import json
import warnings

import numpy as np
import pytest

import graphdsl as gd
import models
from graphdsl import nn, ops
from graphdsl.errors import GraphDSLError
from graphdsl.optim import SGD, AdamW, Constant, LinearWarmupDecay, Optimizer, Schedule, WarmupCosine
from models.trainer import FORMAT_VERSION, Trainer, spec_batches

W_TRUE = np.array([[1.5], [-2.0], [0.5]], np.float32)


def linear_graph(activation=None):
    """A regression loss graph with parameters ``weight [3,1]`` and ``bias [1]``, and its module."""
    lin = nn.Linear(3, 1)

    def loss(x, y):
        out = lin(x)
        return {"loss": ops.mse(out.tanh() if activation == "tanh" else out, y)}
    return lin, gd.trace(loss, params=lin, name="linreg", x="f32[n,3]", y="f32[n,1]")


def batch(step):
    x = np.random.default_rng([0, step]).normal(size=(8, 3)).astype(np.float32)
    return {"x": x, "y": x @ W_TRUE + np.float32(0.5)}


SETTINGS = dict(schedule=WarmupCosine(1, 6, min_ratio=0.1), clip_norm=0.5, seed=7)


@pytest.fixture()
def linear_ckpt(tmp_path):
    """A linear-regression trainer after 3 steps and its checkpoint (AdamW, schedule, clipping)."""
    lin, graph = linear_graph()
    trainer = Trainer(graph, lin.init(seed=0), AdamW(lr=0.05, betas=(0.8, 0.99), weight_decay=0.02),
                      progress=False, **SETTINGS)
    trainer.fit(batch, steps=3)
    return graph, trainer, trainer.save(tmp_path / "ckpt")


def test_resume_with_no_arguments_continues_exactly(tmp_path):
    """bert-tiny (dropout on, so the seed matters) with non-default AdamW hyperparameters, a
    schedule and clipping: load(path, spec) alone gives the 6-step run's losses and parameters."""
    spec = models.get("bert-tiny")

    def make():
        return Trainer(spec, None, AdamW(lr=2e-3, betas=(0.85, 0.995), eps=1e-7, weight_decay=0.05,
                                         lr_scale={"bert.embeddings.": 0.5}),
                       schedule=WarmupCosine(2, 6, min_ratio=0.2), clip_norm=0.5, seed=11, progress=False)

    batches = spec_batches(spec, 8, seed=3)
    whole = make()
    whole.fit(batches, steps=6)
    first = make()
    first.fit(batches, steps=3)
    first.save(tmp_path / "ckpt")

    resumed = Trainer.load(tmp_path / "ckpt", spec, progress=False)
    assert resumed.step == 3
    assert resumed.optimizer.config() == first.optimizer.config()
    assert resumed.schedule.config() == first.schedule.config()
    assert (resumed.clip_norm, resumed.seed, resumed.opt_level) == (0.5, 11, 2)
    assert resumed.step_graph.structural_hash() == first.step_graph.structural_hash()
    resumed.fit(batches, steps=3)
    assert resumed.losses == whole.losses            # bit for bit
    assert len(set(whole.losses)) == 6
    for k, v in whole.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)


def test_trainer_json_records_how_the_run_trained(linear_ckpt):
    _, trainer, path = linear_ckpt
    meta = json.loads((path / "trainer.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["optimizer"] == {"class": "AdamW", "lr": 0.05, "betas": [0.8, 0.99], "eps": 1e-8,
                                 "weight_decay": 0.02, "lr_scale": {}}
    assert meta["schedule"] == {"class": "WarmupCosine", "warmup_steps": 1, "total_steps": 6, "min_ratio": 0.1}
    assert (meta["clip_norm"], meta["seed"], meta["opt_level"], meta["step"]) == (0.5, 7, 2, 3)
    assert meta["wrt"] == ["weight", "bias"]
    assert meta["step_graph_hash"] == trainer.step_graph.structural_hash()
    assert len(meta["step_graph_hash"]) == 64
    assert Optimizer.from_config(meta["optimizer"]).config() == meta["optimizer"]
    assert Schedule.from_config(meta["schedule"]).config() == meta["schedule"]


@pytest.mark.parametrize("change, was, now", [
    (dict(optimizer=AdamW(lr=0.01, betas=(0.8, 0.99), weight_decay=0.02)), "lr=0.05", "lr=0.01"),
    (dict(optimizer=AdamW(lr=0.05, weight_decay=0.02)), "betas=[0.8, 0.99]", "betas=[0.9, 0.999]"),
    (dict(clip_norm=None), "clip_norm=0.5", "clip_norm=None"),
    (dict(clip_norm=2), "clip_norm=0.5", "clip_norm=2.0"),
    (dict(schedule=WarmupCosine(1, 10, min_ratio=0.1)),
     "schedule=WarmupCosine(warmup_steps=1, total_steps=6, min_ratio=0.1)",
     "schedule=WarmupCosine(warmup_steps=1, total_steps=10, min_ratio=0.1)"),
    (dict(schedule=None), "schedule=WarmupCosine(", "schedule=None"),
    (dict(seed=0), "seed=7", "seed=0"),
    (dict(opt_level=0), "opt_level=2", "opt_level=0"),
    (dict(wrt=["weight"]), "wrt=['weight', 'bias']", "wrt=['weight']"),
])
def test_a_conflicting_argument_refuses_with_both_values(linear_ckpt, change, was, now):
    graph, _, path = linear_ckpt
    with pytest.raises(GraphDSLError) as e:
        Trainer.load(path, graph, progress=False, **change)
    msg = str(e.value)
    assert f"checkpoint {str(path)!r} was trained with {was}" in msg and f"this call passes {now}" in msg
    assert "allow_override=True" in msg


def test_the_same_arguments_given_explicitly_are_accepted(linear_ckpt):
    graph, trainer, path = linear_ckpt
    again = Trainer.load(path, graph, AdamW(lr=0.05, betas=(0.8, 0.99), weight_decay=0.02), progress=False,
                         wrt=["bias", "weight"], opt_level=2, **SETTINGS)   # wrt is a set: any order
    assert again.wrt == ["weight", "bias"] and again.step == 3


def test_allow_override_warns_and_uses_the_new_values(linear_ckpt):
    graph, trainer, path = linear_ckpt
    with pytest.warns(UserWarning) as caught:
        changed = Trainer.load(path, graph, AdamW(lr=0.01, betas=(0.8, 0.99), weight_decay=0.02),
                               clip_norm=None, allow_override=True, progress=False)
    text = "\n".join(str(w.message) for w in caught)
    assert "was lr=0.05, clip_norm=0.5, now lr=0.01, clip_norm=None" in text
    assert "structural hash" in text                      # the step graph changed with them
    assert changed.optimizer.lr == 0.01 and changed.clip_norm is None
    assert changed.schedule.config() == SETTINGS["schedule"].config() and changed.seed == 7  # restored
    assert "grad_norm" not in changed.step_graph.outputs
    record, = changed.fit(batch, steps=1)
    assert record["lr"] == pytest.approx(0.01 * SETTINGS["schedule"].value_at(3))
    assert changed.step == 4


def test_another_models_loss_graph_refuses_on_the_structural_hash(linear_ckpt):
    graph, trainer, path = linear_ckpt
    _, other = linear_graph(activation="tanh")             # same parameters, another loss
    recorded = trainer.step_graph.structural_hash()[:12]
    with pytest.raises(GraphDSLError, match=rf"structural hash {recorded} recorded, [0-9a-f]{{12}} rebuilt"):
        Trainer.load(path, other, progress=False)
    with pytest.warns(UserWarning, match="structural hash"):
        anyway = Trainer.load(path, other, allow_override=True, progress=False)
    assert anyway.step == 3
    other_bert = models.get("bert-tiny")                   # other parameters: the shapes say so first
    with pytest.raises(GraphDSLError, match="parameters does not fit this train step"):
        Trainer.load(path, other_bert, progress=False)


def test_the_optimizer_is_rebuilt_from_the_checkpoint(tmp_path):
    lin, graph = linear_graph()

    def make():
        return Trainer(graph, lin.init(seed=0), SGD(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3,
                                                    lr_scale={"bias": 2.0}),
                       schedule=LinearWarmupDecay(0, 8), wrt=["weight"], progress=False)
    whole = make()
    whole.fit(batch, steps=6)
    first = make()
    first.fit(batch, steps=3)
    first.save(tmp_path / "sgd")
    resumed = Trainer.load(tmp_path / "sgd", graph, progress=False)
    assert type(resumed.optimizer) is SGD
    assert resumed.optimizer.config() == {"class": "SGD", "lr": 0.02, "momentum": 0.9, "nesterov": True,
                                          "weight_decay": 1e-3, "lr_scale": {"bias": 2.0}}
    assert resumed.wrt == ["weight"]
    resumed.fit(batch, steps=3)
    assert resumed.losses == whole.losses
    np.testing.assert_array_equal(resumed.params["weight"], whole.params["weight"])
    np.testing.assert_array_equal(resumed.params["bias"], lin.init(seed=0)["bias"])   # frozen


def test_a_schedule_of_none_and_constant_round_trip(tmp_path):
    lin, graph = linear_graph()
    for schedule in (None, Constant()):
        t = Trainer(graph, lin.init(seed=0), SGD(lr=0.1), schedule=schedule, progress=False)
        t.fit(batch, steps=1)
        back = Trainer.load(t.save(tmp_path / str(schedule)), graph, progress=False)
        assert (back.schedule is None) == (schedule is None)
        assert back.step_graph.structural_hash() == t.step_graph.structural_hash()


def as_version_1(path, schedule_text):
    """Rewrite a checkpoint snapshot as the version-1 code wrote it: its trainer.json, no manifest."""
    meta = json.loads((path / "trainer.json").read_text())
    v1 = {k: meta[k] for k in ("format", "step", "seed", "model", "graph", "clip_norm", "target", "params",
                               "best", "history")}
    v1.update(format_version=1, optimizer={"class": meta["optimizer"]["class"], "lr": meta["optimizer"]["lr"]},
              schedule=schedule_text)
    (path / "trainer.json").write_text(json.dumps(v1))
    (path / "manifest.json").unlink()


def rewrite_trainer_json(path, meta):
    """Replace a snapshot's trainer.json as another writer would have, its manifest updated to match."""
    from models.checkpoint import digest
    (path / "trainer.json").write_text(json.dumps(meta))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["trainer.json"] = {"bytes": (path / "trainer.json").stat().st_size,
                                         "sha256": digest(path / "trainer.json")}
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_version_1_checkpoints_resume_best_effort_only_with_allow_override(tmp_path):
    lin, graph = linear_graph()

    def make(**kw):
        return Trainer(graph, lin.init(seed=0), AdamW(lr=0.05), opt_level=0, progress=False, **SETTINGS, **kw)
    whole = make()
    whole.fit(batch, steps=6)
    first = make()
    first.fit(batch, steps=3)
    path = first.save(tmp_path / "v1")
    as_version_1(path, "WarmupCosine(warmup_steps=1, total_steps=6)")

    with pytest.raises(GraphDSLError, match="format version 1, which did not record"):
        Trainer.load(path, graph, AdamW(lr=0.05), schedule=SETTINGS["schedule"])
    with pytest.raises(GraphDSLError, match="records only the optimizer's class and lr"):
        Trainer.load(path, graph, allow_override=True)
    with pytest.raises(GraphDSLError, match=r"schedule WarmupCosine\(warmup_steps=1, total_steps=6\), recorded "
                                            r"only as text"):
        Trainer.load(path, graph, AdamW(lr=0.05), allow_override=True)
    with pytest.warns(UserWarning, match="format version 1: resuming best-effort"):
        resumed = Trainer.load(path, graph, AdamW(lr=0.05), schedule=SETTINGS["schedule"], allow_override=True,
                               progress=False)
    assert (resumed.clip_norm, resumed.seed, resumed.opt_level) == (0.5, 7, 0)   # recorded / v1's level
    resumed.fit(batch, steps=3)
    assert resumed.losses == whole.losses
    snapshot = resumed.save(path)
    assert snapshot.parent == path and json.loads((snapshot / "trainer.json").read_text())["format_version"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer.load(path, graph, progress=False)          # version 2 now: no warning


def test_unreadable_versions_and_undescribable_optimizers(tmp_path, linear_ckpt):
    graph, trainer, path = linear_ckpt
    meta = json.loads((path / "trainer.json").read_text())
    rewrite_trainer_json(path, {**meta, "format_version": 99})
    with pytest.raises(GraphDSLError, match="format version 99, this code reads versions 1 and 2"):
        Trainer.load(path, graph)

    class Halved(SGD):
        def __init__(self, base_lr):
            super().__init__(base_lr / 2)
    lin, graph = linear_graph()
    odd = Trainer(graph, lin.init(seed=0), Halved(0.2), progress=False)
    with pytest.raises(GraphDSLError, match="cannot be described as data: __init__ takes 'base_lr'"):
        odd.save(tmp_path / "odd")
    assert not (tmp_path / "odd").exists()                 # nothing half-written
