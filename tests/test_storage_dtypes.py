"""The storage dtypes (float8, float4, int4, int2): casts to and from them at the edges, on the
reference and bit for bit on llvm, and every other op refusing them (docs/semantics.md, "Casts").

The expected bits are written here from the formats' definitions (sign, exponent bits and bias,
mantissa bits, how NaN and inf are spelled), not from ml_dtypes' astype. One llvm graph holds
every cast, so it compiles once.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphdsl
from backends.targets import compile as compile_graph
from graphdsl import dtypes as dt
from graphdsl import ops
from graphdsl.errors import InputError, LoweringError, TypeError_

NAN, INF = float("nan"), float("inf")

# (value, bits with saturate=True, bits with saturate=False); one table per dtype
ENCODE = {
    "float8_e4m3fn": [   # bias 7, no inf, S.1111.111 is NaN, max 448 = 0x7e
        (0.0, 0x00, 0x00), (-0.0, 0x80, 0x80), (2.0 ** -9, 0x01, 0x01),   # smallest subnormal
        (2.0 ** -10, 0x00, 0x00),           # half of it: the tie goes to the even 0
        (1.5 * 2.0 ** -9, 0x02, 0x02),      # tie between subnormals 1 and 2: even 2
        (1.0, 0x38, 0x38), (1.0625, 0x38, 0x38), (1.1875, 0x3A, 0x3A),   # ties to even
        (448.0, 0x7E, 0x7E), (464.0, 0x7E, 0x7E),   # the tie with 480 (the NaN's bits) goes to 448
        (465.0, 0x7E, 0x7F), (1e9, 0x7E, 0x7F), (-1e9, 0xFE, 0xFF),
        (INF, 0x7E, 0x7F), (-INF, 0xFE, 0xFF), (NAN, 0x7F, 0x7F), (-NAN, 0xFF, 0xFF),
    ],
    "float8_e4m3fnuz": [   # bias 8, no inf, no -0: 0x80 is the NaN; max 240 = 0x7f
        (0.0, 0x00, 0x00), (-0.0, 0x00, 0x00), (2.0 ** -10, 0x01, 0x01), (-2.0 ** -12, 0x00, 0x00),
        (1.0, 0x40, 0x40), (-1.0, 0xC0, 0xC0), (240.0, 0x7F, 0x7F),
        (248.0, 0x7F, 0x80),   # tie between 240 (odd) and 256 (past the max): rounds up, overflows
        (247.0, 0x7F, 0x7F), (INF, 0x7F, 0x80), (-INF, 0xFF, 0x80), (NAN, 0x80, 0x80),
    ],
    "float8_e5m2": [   # bias 15, IEEE-like: S.11111.00 is inf, max 57344 = 0x7b
        (0.0, 0x00, 0x00), (-0.0, 0x80, 0x80), (2.0 ** -16, 0x01, 0x01), (1.0, 0x3C, 0x3C),
        (57344.0, 0x7B, 0x7B), (61440.0, 0x7B, 0x7C),   # the tie with 65536 goes to it: inf
        (61439.0, 0x7B, 0x7B), (INF, 0x7B, 0x7C), (-INF, 0xFB, 0xFC), (NAN, 0x7E, 0x7E),
    ],
    "float8_e5m2fnuz": [   # bias 16, no inf, no -0; max 57344 = 0x7f
        (0.0, 0x00, 0x00), (-0.0, 0x00, 0x00), (2.0 ** -17, 0x01, 0x01), (1.0, 0x40, 0x40),
        (57344.0, 0x7F, 0x7F), (61440.0, 0x7F, 0x80), (INF, 0x7F, 0x80), (-INF, 0xFF, 0x80),
        (NAN, 0x80, 0x80),
    ],
    "float8_e8m0fnu": [   # 2**(bits - 127), 0xff is NaN; round_mode "up"; the sign is ignored
        (1.0, 127, 127), (1.1, 128, 128), (0.124, 124, 124), (-4.0, 129, 129),
        (2.0 ** -127, 0, 0), (2.0 ** 127, 254, 254),
        (3e38, 254, 255),     # rounds up to 2**128: past the max
        (0.0, 0, 255),        # below the min
        (INF, 254, 255), (NAN, 255, 255),
    ],
    "float4_e2m1fn": [   # bias 1, no inf or NaN: always saturates; a NaN becomes +0
        (0.0, 0x0, 0x0), (-0.0, 0x8, 0x8), (0.5, 0x1, 0x1), (0.25, 0x0, 0x0), (0.75, 0x2, 0x2),
        (1.0, 0x2, 0x2), (5.0, 0x6, 0x6), (6.0, 0x7, 0x7), (7.0, 0x7, 0x7), (1e9, 0x7, 0x7),
        (INF, 0x7, 0x7), (-INF, 0xF, 0xF), (-3.5, 0xE, 0xE), (NAN, 0x0, 0x0),
    ],
    "int4": [   # truncated toward zero; outside [-8, 7] (NaN, inf) is 0; the low 4 bits
        (7.9, 7, 7), (8.0, 0, 0), (-8.9, 0x8, 0x8), (-9.0, 0, 0), (-1.0, 0xF, 0xF),
        (2.5, 2, 2), (-2.5, 0xE, 0xE), (NAN, 0, 0), (INF, 0, 0),
    ],
    "uint4": [(15.5, 15, 15), (16.0, 0, 0), (-0.5, 0, 0), (-1.0, 0, 0), (3.0, 3, 3)],
    "int2": [(1.9, 1, 1), (2.0, 0, 0), (-2.0, 0x2, 0x2), (-3.0, 0, 0), (-1.0, 0x3, 0x3)],
    "uint2": [(3.0, 3, 3), (4.0, 0, 0), (-1.0, 0, 0)],
}

FORMATS = {   # name: (bits, exponent bits, mantissa bits, bias) of the float formats
    "float8_e4m3fn": (8, 4, 3, 7), "float8_e4m3fnuz": (8, 4, 3, 8), "float8_e5m2": (8, 5, 2, 15),
    "float8_e5m2fnuz": (8, 5, 2, 16), "float4_e2m1fn": (4, 2, 1, 1),
}


def _decoded(name: str, code: int) -> float:
    """The value of ``code`` in format ``name``, from the definition."""
    code = int(code)
    if name == "float8_e8m0fnu":
        return NAN if code == 0xFF else 2.0 ** (code - 127)
    if name in ("int4", "int2"):
        bits = 4 if name == "int4" else 2
        return float(code - (1 << bits) if code >= 1 << (bits - 1) else code)
    if name in ("uint4", "uint2"):
        return float(code)
    bits, eb, mb, bias = FORMATS[name]
    sign = -1.0 if code >> (bits - 1) else 1.0
    e, m = (code >> mb) & ((1 << eb) - 1), code & ((1 << mb) - 1)
    if name.endswith("fnuz") and code == 0x80:
        return NAN
    if name == "float8_e4m3fn" and code & 0x7F == 0x7F:
        return NAN
    if name == "float8_e5m2" and e == 31:
        return sign * INF if m == 0 else NAN
    if e == 0:
        return sign * m * 2.0 ** (1 - bias - mb)
    return sign * (1 + m / 2 ** mb) * 2.0 ** (e - bias)


def _codes(d: dt.DType) -> np.ndarray:
    return np.arange(1 << d.bits, dtype=np.uint8)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint8)


def _values(name) -> np.ndarray:
    """The table's values as float32, -NaN with its sign bit set."""
    out = np.array([abs(v) if np.isnan(v) else v for v, _, _ in ENCODE[name]], np.float32)
    neg_nan = [np.isnan(v) and np.signbit(v) for v, _, _ in ENCODE[name]]
    return np.where(neg_nan, -out, out)


# -- the reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENCODE))
@pytest.mark.parametrize("saturate", [True, False])
def test_reference_encodes_the_edges(name, saturate):
    d = dt.dtype(name)
    g = graphdsl.trace(lambda x: ops.cast(x, dtype=d, saturate=saturate), x=f"f32[{len(ENCODE[name])}]")
    got = compile_graph(g, "numpy")(x=_values(name))["out"]
    assert got.dtype == d.np
    want = np.array([s if saturate else n for _, s, n in ENCODE[name]], np.uint8)
    assert _bits(got).tolist() == want.tolist(), [(v, hex(a), hex(b)) for v, a, b in
                                                  zip(_values(name), _bits(got), want) if a != b]


@pytest.mark.parametrize("name", list(ENCODE))
def test_reference_decodes_every_code(name):
    d = dt.dtype(name)
    g = graphdsl.trace(lambda b: ops.cast(b, dtype=dt.float32), b=f"{d.short}[{1 << d.bits}]")
    got = compile_graph(g, "numpy")(b=_codes(d).view(d.np))["out"]
    want = np.array([_decoded(name, c) for c in _codes(d)], np.float32)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got[~np.isnan(want)]), np.signbit(want[~np.isnan(want)]))


@pytest.mark.parametrize("name", list(ENCODE))
def test_round_trip_through_float32_keeps_every_code(name):
    """(without saturating: inf stays inf)"""
    d = dt.dtype(name)
    g = graphdsl.trace(lambda b: ops.cast(ops.cast(b, dtype=dt.float32), dtype=d, saturate=False), b=f"{d.short}[{1 << d.bits}]")
    codes = _codes(d)
    got = _bits(compile_graph(g, "numpy")(b=codes.view(d.np))["out"])
    values = np.array([_decoded(name, c) for c in codes])
    keep = ~np.isnan(values) & (values != 0 if name.endswith("fnuz") else True)
    assert got[keep].tolist() == codes[keep].tolist()


def test_e8m0_round_modes():
    x = np.array([1.5, 1.4, 3.0, 2.0, 2.0 ** -127 * 0.7], np.float32)
    want = {"up": [128, 128, 129, 128, 0], "down": [127, 127, 128, 128, 0], "nearest": [128, 127, 129, 128, 0]}
    for mode, bits in want.items():
        g = graphdsl.trace(lambda x: ops.cast(x, dtype=dt.float8_e8m0fnu, round_mode=mode), x="f32[5]")
        assert _bits(compile_graph(g, "numpy")(x=x)["out"]).tolist() == bits, mode


def test_integers_narrow_to_int4_by_their_low_bits():
    g = graphdsl.trace(lambda i: {"i4": ops.cast(i, dtype=dt.int4), "u4": ops.cast(i, dtype=dt.uint4),
                                  "i2": ops.cast(i, dtype=dt.int2)}, i="i32[4]")
    out = compile_graph(g, "numpy")(i=np.array([17, -9, 200, -1], np.int32))
    assert _bits(out["i4"]).tolist() == [1, 7, 8, 15]
    assert _bits(out["u4"]).tolist() == [1, 7, 8, 15]
    assert _bits(out["i2"]).tolist() == [1, 3, 0, 3]


def test_storage_to_int8_and_between_storage_types():
    g = graphdsl.trace(lambda b: {"i8": ops.cast(b, dtype=dt.int8), "f8": ops.cast(b, dtype=dt.float8_e4m3fn)},
                       b="i4[16]")
    out = compile_graph(g, "numpy")(b=_codes(dt.int4).view(dt.int4.np))
    want = [c - 16 if c >= 8 else c for c in range(16)]
    assert out["i8"].tolist() == want
    assert out["f8"].astype(np.float32).tolist() == [float(w) for w in want]


# -- errors ----------------------------------------------------------------------------------------
def test_other_ops_refuse_storage_dtypes_naming_the_op():
    with pytest.raises(TypeError_, match=r"(?s)add: does not take float8_e4m3fn .*f8e4m3fn\[3\].*cast it first"):
        graphdsl.trace(lambda x: x + x, x="f8e4m3fn[3]")
    with pytest.raises(TypeError_, match=r"exp: does not take int4"):
        graphdsl.trace(lambda x: ops.exp(x), x="i4[2]")


def test_a_storage_input_takes_only_its_own_dtype():
    g = graphdsl.trace(lambda b: ops.cast(b, dtype=dt.float32), b="f8e5m2[2]")
    with pytest.raises(InputError, match=r"expects f8e5m2\[2\], got float32"):
        compile_graph(g, "numpy")(b=np.zeros(2, np.float32))


def test_the_cast_checks_round_mode():
    with pytest.raises(TypeError_, match=r"cast: round_mode='sideways'"):
        graphdsl.trace(lambda x: ops.cast(x, dtype=dt.float8_e8m0fnu, round_mode="sideways"), x="f32[2]")


def test_onnx_export_refuses_storage_dtypes_by_name():
    pytest.importorskip("onnxruntime")
    g = graphdsl.trace(lambda x: ops.cast(x, dtype=dt.float8_e4m3fn), x="f32[2]")
    with pytest.raises(LoweringError, match="float8_e4m3fn"):
        compile_graph(g, "onnxruntime")


# -- llvm, bit for bit against the reference ---------------------------------------------------------
def _llvm_graph(n: int):
    def f(x, **bytes_in):
        out = {}
        for name in ENCODE:
            d = dt.dtype(name)
            out[f"to_{name}"] = ops.cast(x, dtype=d)
            out[f"from_{name}"] = ops.cast(bytes_in[name], dtype=dt.float32)
        out["to_float8_e4m3fn_nosat"] = ops.cast(x, dtype=dt.float8_e4m3fn, saturate=False)
        out["to_float8_e5m2_nosat"] = ops.cast(x, dtype=dt.float8_e5m2, saturate=False)
        return out
    specs = {name: f"{dt.dtype(name).short}[256]" for name in ENCODE}
    return graphdsl.trace(f, x=f"f32[{n}]", **specs)


def test_llvm_matches_the_reference_bit_for_bit():
    pytest.importorskip("tvm")
    rng = np.random.default_rng(0)
    edges = np.concatenate([_values(name) for name in ENCODE])
    spread = (rng.standard_normal(500) * 10.0 ** rng.uniform(-12, 12, 500)).astype(np.float32)
    random_bits = rng.integers(0, 2 ** 32, 500, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([edges, spread, random_bits])
    g = _llvm_graph(x.size)
    inputs = {"x": x} | {name: np.arange(256, dtype=np.uint8).view(dt.dtype(name).np) for name in ENCODE}
    want = compile_graph(g, "numpy")(**inputs)
    got = compile_graph(g, "llvm")(**inputs)
    for key, w in want.items():
        assert got[key].dtype == w.dtype, key
        if w.dtype == np.float32:
            np.testing.assert_array_equal(got[key], w, err_msg=key)
            assert np.array_equal(np.signbit(got[key][~np.isnan(w)]), np.signbit(w[~np.isnan(w)])), key
        else:
            bad = np.nonzero(_bits(got[key]) != _bits(w))[0]
            assert not bad.size, f"{key}: x={x[bad[:5]]} llvm={_bits(got[key])[bad[:5]]} numpy={_bits(w)[bad[:5]]}"
