"""graphdsl/lowering.py on its own: how rows are registered, refused, chosen and called.

Every backend's table (TVM, ONNX export, ONNX import) is a LoweringTable, so these rules hold for
all of them: a duplicate is an error at registration naming both functions, the highest-priority
row whose ``when`` holds is chosen, and ``call_row`` passes optional inputs by name. The tables'
contents are tests/test_lowering_tables.py's subject.
"""
from __future__ import annotations

import pytest

import graphdsl
from graphdsl import ops
from graphdsl.lowering import LoweringTable, Row, always, call_row


def node_of(fn, **types):
    """The output node of ``fn`` traced on ``types``: a real node to choose and call rows for."""
    return graphdsl.trace(fn, **types).outputs["out"]


def add_row(cx, node, a, b):
    return ("add_row", a, b)


def sub_row(cx, node, a, b):
    return ("sub_row", a, b)


ADD = node_of(lambda a, b: a + b, a="f32[3]", b="f32[3]")
Q, K, V = "f32[1,2,4]", "f32[1,3,4]", "f32[1,3,4]"


# -- registering ----------------------------------------------------------------------------------
def test_register_as_a_plain_call():
    table = LoweringTable("t")
    assert table.register("add", add_row) is add_row
    assert "add" in table and "sub" not in table
    assert table.keys() == ["add"]
    assert table.rows("add") == [Row("add", add_row, always, 0)]


def test_register_as_a_decorator_keeps_the_function():
    table = LoweringTable("t")

    @table.register("add", priority=3)
    def decorated(cx, node, a, b):
        return a

    assert decorated(None, None, 1, 2) == 1, "the decorator returns the function itself"
    assert table.rows("add") == [Row("add", decorated, always, 3)]


def test_a_tuple_of_keys_registers_one_row_each():
    table = LoweringTable("t")
    table.register(("add", "sub", "mul"), add_row)
    assert table.keys() == ["add", "mul", "sub"]
    assert [r.key for k in table.keys() for r in table.rows(k)] == ["add", "mul", "sub"]
    assert all(r.fn is add_row for k in table.keys() for r in table.rows(k))


def test_two_rows_at_one_priority_are_refused_naming_both_functions():
    table = LoweringTable("tvm")
    table.register("add", add_row, when=lambda cx, node: True, priority=5)
    with pytest.raises(ValueError) as info:
        table.register("add", sub_row, when=lambda cx, node: False, priority=5)
    text = str(info.value)
    assert "tvm table" in text and "'add'" in text and "priority 5" in text
    assert "add_row" in text and "sub_row" in text, text
    assert "test_lowering_table_type.py" in text, "the message says where each function is"
    assert [r.fn for r in table.rows("add")] == [add_row], "the refused row is not added"


def test_two_unconditional_rows_are_refused_whatever_their_priorities():
    table = LoweringTable("onnx")
    table.register("add", add_row)
    with pytest.raises(ValueError, match=r"two unconditional rows: add_row .*sub_row"):
        table.register("add", sub_row, priority=7)
    table.register("add", sub_row, when=lambda cx, node: True, priority=7)     # a conditional one is fine
    assert [r.fn for r in table.rows("add")] == [sub_row, add_row]


def test_a_duplicate_in_a_tuple_of_keys_names_the_key():
    table = LoweringTable("t")
    table.register("sub", sub_row)
    with pytest.raises(ValueError, match=r"op 'sub' has two rows at priority 0"):
        table.register(("add", "sub"), add_row)


# -- choosing -------------------------------------------------------------------------------------
def _kernels_table(order):
    """attention's kernel choice as data: flash on a GPU, the fused CPU kernel, else generic."""
    def flash(cx, node, *args, **named):
        return "flash"

    def cpu_fused(cx, node, *args, **named):
        return "cpu_fused"

    def generic(cx, node, *args, **named):
        return "generic"

    rows = {"flash": dict(fn=flash, when=lambda cx, node: cx["gpu"], priority=20),
            "cpu_fused": dict(fn=cpu_fused, when=lambda cx, node: not node.attrs["causal"], priority=10),
            "generic": dict(fn=generic)}
    table = LoweringTable("kernels")
    for name in order:
        table.register("attention", **rows[name])
    return table


@pytest.mark.parametrize("order", [("flash", "cpu_fused", "generic"), ("generic", "cpu_fused", "flash")],
                         ids=["highest_first", "lowest_first"])
def test_choose_takes_the_highest_priority_row_whose_when_holds(order):
    table = _kernels_table(order)
    plain = node_of(lambda q, k, v: ops.attention(q, k, v), q=Q, k=K, v=V)
    causal = node_of(lambda q, k, v: ops.attention(q, k, v, causal=True), q=Q, k=K, v=V)
    assert [r.priority for r in table.rows("attention")] == [20, 10, 0], "rows are kept highest first"

    def chosen(cx, node):
        return table.choose(cx, node).fn(cx, node)

    assert chosen({"gpu": True}, causal) == "flash"
    assert chosen({"gpu": False}, plain) == "cpu_fused"
    assert chosen({"gpu": False}, causal) == "generic"


def test_choose_without_a_row_is_none():
    table = LoweringTable("t")
    assert table.choose({}, ADD) is None, "no row for the op"
    table.register("add", add_row, when=lambda cx, node: cx.get("fast", False))
    assert table.choose({}, ADD) is None, "no row whose when holds"
    assert table.choose({"fast": True}, ADD).fn is add_row
    assert table.choose({"fast": True}, ADD, key="sub") is None, "key= looks up another op's rows"
    assert table.rows("sub") == []


def test_stale_lists_keys_that_are_not_known():
    table = LoweringTable("t")
    table.register(("add", "gone", "also_gone"), add_row)
    assert table.stale(["add", "sub"]) == ["also_gone", "gone"]
    assert table.stale(graphdsl.registry.all_ops()) == ["also_gone", "gone"]
    assert LoweringTable("empty").stale([]) == []
    assert "3 ops" in repr(table)


# -- calling --------------------------------------------------------------------------------------
def _recorder(calls: list):
    """A row function that records the inputs it was given, positional and named."""
    def fn(cx, node, *args, **named):
        calls.append((args, named))
        return "lowered"
    return fn


def test_call_row_passes_the_inputs_of_a_plain_op_by_position():
    calls = []
    assert call_row(Row("add", _recorder(calls)), "cx", ADD, ["a", "b"]) == "lowered"
    assert calls == [(("a", "b"), {})]


@pytest.mark.parametrize("with_bias,with_seed", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["plain", "bias", "seed", "bias_seed"])
def test_call_row_passes_attention_optional_inputs_by_name(with_bias, with_seed):
    def f(q, k, v, bias, seed):
        return ops.attention(q, k, v, bias if with_bias else None, seed if with_seed else None,
                             dropout_p=0.1 if with_seed else 0.0)

    node = node_of(f, q=Q, k=K, v=V, bias="f32[2,3]", seed="i32[]")
    values = ["Q", "K", "V"] + (["BIAS"] if with_bias else []) + (["SEED"] if with_seed else [])
    assert len(node.inputs) == len(values)
    calls = []
    call_row(Row("attention", _recorder(calls)), "cx", node, values)
    assert calls == [(("Q", "K", "V"), {"bias": "BIAS" if with_bias else None,
                                        "seed": "SEED" if with_seed else None})]


@pytest.mark.parametrize("with_bias,with_seed", [(False, False), (True, True)], ids=["plain", "bias_seed"])
def test_call_row_passes_attention_grad_g_after_the_required_inputs(with_bias, with_seed):
    """attention_grad's inputs are q, k, v, bias?, seed?, g: g comes by position after q, k, v."""
    def f(q, k, v, bias, seed):
        out = ops.attention(q, k, v, bias if with_bias else None, seed if with_seed else None,
                            dropout_p=0.1 if with_seed else 0.0)
        return {"loss": out.sum()}

    g = graphdsl.grad(graphdsl.trace(f, q=Q, k=K, v=V, bias="f32[2,3]", seed="i32[]"), wrt=["q"])
    node = next(n for n in g.outputs.values() if n.op == "attention_grad")
    values = ["Q", "K", "V"] + (["BIAS"] if with_bias else []) + (["SEED"] if with_seed else []) + ["G"]
    calls = []
    call_row(Row("attention_grad", _recorder(calls)), "cx", node, values)
    assert calls == [(("Q", "K", "V", "G"), {"bias": "BIAS" if with_bias else None,
                                             "seed": "SEED" if with_seed else None})]


def test_call_row_refuses_a_wrong_number_of_inputs():
    node = node_of(lambda q, k, v: ops.attention(q, k, v), q=Q, k=K, v=V)
    with pytest.raises(graphdsl.GraphDSLError, match=r"has inputs \['q', 'k', 'v'\], got 4 values"):
        call_row(Row("attention", _recorder([])), "cx", node, ["Q", "K", "V", "extra"])


def test_disabled_rows_are_skipped_inside_the_block_and_back_after_it():
    table = LoweringTable("t")
    table.register("add", add_row)
    table.register("add", sub_row, when=lambda cx, node: True, priority=10)
    assert table.choose(None, ADD).fn is sub_row
    with table.disabled(sub_row):
        assert table.choose(None, ADD).fn is add_row
    assert table.choose(None, ADD).fn is sub_row
    with pytest.raises(ValueError, match="no row calls"):
        with table.disabled(node_of):
            pass
