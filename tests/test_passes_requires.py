"""What a pass requires to run before it, checked by the manager; and the report sections passes add."""
from __future__ import annotations

import json
from collections import Counter

import pytest

import graphdsl as gd
import passes
from passes.manager import PASSES, Pass, Section, register, unmet_requirements

# (pass, a pass it requires): the ordering needs the pass modules declare
REQUIRED = [
    ("fuse_attention", "fuse_softmax"), ("fuse_attention", "fold_masks"), ("fuse_attention", "canonicalize"),
    ("fuse_layer_norm", "canonicalize"), ("fuse_layer_norm", "cse"), ("fuse_add_layer_norm", "fuse_layer_norm"),
    ("fuse_gelu", "canonicalize"), ("fuse_bias_activation", "fuse_gelu"),
]


def _attention_graph():
    def fn(q, k, v):
        return ((q @ k.mT) / 2.0).softmax(-1) @ v
    return gd.trace(fn, q="f32[2,3,4]", k="f32[2,3,4]", v="f32[2,3,4]")


def test_passes_declare_what_must_run_before_them():
    for name, required in REQUIRED:
        assert required in PASSES[name].requires, name
    for p in PASSES.values():
        assert set(p.requires) <= set(PASSES), f"{p.name} requires an unknown pass"
        assert p.name not in p.requires


@pytest.mark.parametrize("level", sorted(passes.LEVELS))
def test_every_pipeline_meets_its_own_requirements(level):
    assert unmet_requirements(passes.pipeline(level)) == []


@pytest.mark.parametrize("name,required", REQUIRED, ids=[f"{n}-{r}" for n, r in REQUIRED])
def test_a_required_pass_listed_after_is_an_error(name, required):
    order = [name, required]
    unmet = [(n, r) for n, r in unmet_requirements(order) if n == name]
    assert unmet == [(name, r) for r in PASSES[name].requires]
    with pytest.raises(passes.PassError) as info:
        passes.PassManager(order)
    msg = str(info.value)
    assert f"pass {name!r} requires {required} to run before it" in msg
    assert f"the order given is: {name}, {required}" in msg
    assert "pipeline" in msg and f"put {required} before {name}" in msg


def test_a_required_pass_not_listed_counts_as_done():
    """The graph may come from an earlier run: fuse_attention alone still fuses it."""
    g = _attention_graph()
    assert passes.run(g, ["fuse_attention"]).op_counts()["attention"] == 1
    assert unmet_requirements(["fuse_attention"]) != []   # unmet, but not misordered: no error


def test_a_pass_requiring_an_unregistered_pass_is_an_error(monkeypatch):
    monkeypatch.setitem(PASSES, "needs_ghost", Pass("needs_ghost", lambda g: (g, Counter()), "test",
                                                    requires=("ghost",)))
    with pytest.raises(passes.PassError, match="'needs_ghost' requires 'ghost', which is not a registered"):
        passes.PassManager(["needs_ghost"])


# -- report sections ------------------------------------------------------------------------------
def test_the_attention_section_comes_from_the_attention_pass():
    assert PASSES["fuse_attention"].section.name == "attention"
    assert [p.name for p in PASSES.values() if p.section] == ["fuse_attention"]
    rep = passes.report(_attention_graph(), level=2)
    doc = rep.to_dict()
    assert list(doc) == ["graph", "passes", "totals", "attention", "final_ops"]
    assert doc["attention"] == {"attention_ops": 1, "causal": 0, "with_bias": 0, "distinct_biases": 0,
                                "softmax_left": 0} == rep.summary("attention")
    line = "attention: attention ops 1, causal 0, with bias 0, distinct biases 0, softmax left 0"
    assert f"\n{line}\n" in str(rep)


def test_every_report_has_every_section_whichever_passes_ran():
    doc = json.loads(passes.report(_attention_graph(), names=["dce"]).to_json())
    assert doc["attention"] == {"attention_ops": 0, "causal": 0, "with_bias": 0, "distinct_biases": 0,
                                "softmax_left": 1}


def test_a_pass_can_add_a_section(monkeypatch):
    def count_exps(graph):
        return {"exp_ops": graph.op_counts().get("exp", 0)}

    probe = Pass("probe", lambda g: (g, Counter()), "test", section=Section("probe", count_exps))
    monkeypatch.setitem(PASSES, "probe", probe)
    g = gd.trace(lambda x: x.exp() + x.exp(), x="f32[3]")
    rep = passes.report(g, names=["probe"])
    assert list(rep.to_dict()) == ["graph", "passes", "totals", "attention", "probe", "final_ops"]
    assert rep.summary("probe") == {"exp_ops": 2}
    lines = str(rep).splitlines()
    final = "final ops: " + ", ".join(f"{k} {v}" for k, v in g.op_counts().items())
    assert lines[-3:] == ["attention: attention ops 0, causal 0, with bias 0, distinct biases 0, softmax left 0",
                          "probe: exp ops 2", final]
    with pytest.raises(KeyError, match="no report section 'nope'; sections: attention, probe"):
        rep.summary("nope")


@pytest.mark.parametrize("section", ["attention", "final_ops", "totals"])
def test_a_section_name_is_taken_once(section):
    with pytest.raises(ValueError, match=f"the report already has a section {section!r}"):
        register("another", lambda g: (g, Counter()), "test", section=Section(section, lambda g: {}))
    assert "another" not in PASSES
