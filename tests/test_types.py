"""Symbolic dims, shapes, tensor types and broadcasting."""
import pytest

from graphdsl import dtypes
from graphdsl.errors import ShapeError, TypeError_
from graphdsl.types import Dim, Shape, TensorType, broadcast_shapes, dim_div, parse_dim

B, S = Dim("batch"), Dim("seq")


@pytest.mark.parametrize("expr,text", [
    (B, "batch"), (B * S, "batch*seq"), (S + 8, "seq+8"), (2 * S, "2*seq"), (S - 1, "seq-1"),
    (B * S * 64, "64*batch*seq"), (B * B, "batch^2"),
])
def test_dim_prints_and_parses_back(expr, text):
    assert str(expr) == text
    assert parse_dim(text) == expr


def test_dim_arithmetic_simplifies_to_int():
    assert (S + 3) - S == 3 and isinstance((S + 3) - S, int)
    assert (B * S) // S == B
    assert dim_div(B * S * 4, 2 * S) == 2 * B
    assert dim_div(B * S, 3) is None
    with pytest.raises(ShapeError):
        (B + 1) // B


def test_dim_evaluate_and_hash():
    assert (B * S + 2).evaluate({"batch": 3, "seq": 5}) == 17
    assert len({B * S, S * B, Dim("batch") * Dim("seq")}) == 1


def test_bad_dim_name():
    with pytest.raises(ShapeError, match="bad dim name"):
        Dim("1x")


@pytest.mark.parametrize("text", ["f32[batch,seq,64]", "bf16[]", "i64[2,3]", "bool[batch*seq]", "f16[seq+1,8]"])
def test_tensor_type_round_trip(text):
    t = TensorType.parse(text)
    assert str(t) == text
    assert TensorType.parse(str(t)) == t


def test_tensor_type_parse_errors():
    with pytest.raises(ShapeError, match="cannot parse"):
        TensorType.parse("float[2]x")
    with pytest.raises(TypeError_, match="unknown dtype"):
        TensorType.parse("q7[2]")


@pytest.mark.parametrize("a,b,out", [
    ((B, S, 64), (64,), (B, S, 64)),
    ((B, 1, S), (1, 8, 1), (B, 8, S)),
    ((B, S), (B, S), (B, S)),
    ((), (3, 4), (3, 4)),
])
def test_broadcast(a, b, out):
    assert broadcast_shapes(Shape(a), Shape(b)) == Shape(out)


@pytest.mark.parametrize("a,b", [((B, S), (S, B)), ((3,), (4,)), ((B,), (2,))])
def test_broadcast_mismatch(a, b):
    assert broadcast_shapes(Shape(a), Shape(b)) is None


def test_shape_numel_and_static():
    assert Shape((B, 4, S)).numel() == 4 * B * S
    assert Shape((2, 3)).is_static and not Shape((B,)).is_static


def test_dtypes():
    assert dtypes.dtype("f32") is dtypes.float32
    assert dtypes.dtype("bfloat16").np.itemsize == 2
    assert dtypes.finfo_min(dtypes.float16) == -65504.0
    with pytest.raises(TypeError_, match="unknown dtype"):
        dtypes.dtype("float8")
