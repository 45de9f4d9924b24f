"""The Winograd F(2x2, 3x3) path of 3x3 stride-1 convolutions (cnncore/kernels.py, pyext/winograd.pyx)
against the NumPy references: forward, fused forward, the input and weight gradients it computes,
non-finite values (recomputed by the direct path) and thread independence.

Most tests force the path (config_context(conv_algorithm='winograd')) so that small shapes take it,
and record what ran (cnncore._conv.select.trace); one checks the default rules on DeepConvNet-sized
layers."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnncore
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._conv import tiling
from cnncore._conv import winograd as wg
from cnncore._conv.select import trace
from cnncore._ext import winograd as _winograd

DTYPES = [np.float32, np.float64]


def tol(dtype, scale):
    """As test_kernels.tol: rounding relative to the result's scale."""
    if np.dtype(dtype) == np.float32:
        return dict(rtol=2e-4, atol=2e-5 * scale)
    return dict(rtol=1e-10, atol=1e-12 * scale)


def make(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


AVX2 = [True, False] if cnncore.cpu_features()["avx2"] else [False]
GEMM = cnncore.cpu_features()["avx2"] and cnncore.cpu_features()["fma"]


@pytest.fixture(params=AVX2, ids=lambda a: "avx2" if a else "baseline")
def winograd_everywhere(request, config):
    """Every 3x3 stride-1 convolution with pad <= 2 takes the Winograd path (forced), with the AVX2
    transforms and float32 products and without; yields the steps that ran."""
    config(conv_algorithm="winograd", use_avx2=request.param)
    with trace() as steps:
        yield steps


def redone(steps, step="forward"):
    """Winograd tiles of steps (forward or gradients) computed again by im2col + GEMM; every
    such step must have run Winograd."""
    assert steps and all(r.algorithm == "winograd" for r in steps if r.step == step)
    return sum(r.redone for r in steps if r.step == step)


# (N, C, H, W, FN, pad): N = 1, C = 1, odd and non-square planes, planes smaller than a tile, all pads
WINOGRAD_CASES = [
    (1, 1, 5, 5, 2, 0),
    (2, 3, 7, 9, 4, 1),
    (3, 2, 6, 8, 5, 2),
    (1, 2, 1, 1, 3, 1),
    (1, 1, 3, 3, 1, 0),
    (2, 2, 2, 5, 3, 2),
    (1, 4, 11, 4, 2, 1),
    (2, 3, 16, 16, 6, 1),
]


def case_id(case):
    return "N{}C{}_{}x{}_FN{}p{}".format(*case)


def operands(rng, case, dtype):
    N, C, H, W, FN, pad = case
    return (make(rng, (N, C, H, W), dtype), make(rng, (FN, C, 3, 3), dtype),
            make(rng, (FN,), dtype), pad)


def check_against_reference(rng, case, dtype, fused):
    x, Wt, b, pad = operands(rng, case, dtype)
    fwd, rfwd = ((K.conv_bias_relu_forward, R.conv_bias_relu_forward) if fused
                 else (K.conv_forward, R.conv_forward))
    out, want = fwd(x, Wt, b, 1, pad), rfwd(x, Wt, b, 1, pad)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, want, **tol(dtype, np.abs(want).max() + 1))
    dout = make(rng, out.shape, dtype)
    if fused:
        got, expected = (K.conv_bias_relu_backward(dout, x, Wt, out, 1, pad),
                         R.conv_bias_relu_backward(dout, x, Wt, want, 1, pad))
    else:
        got, expected = K.conv_backward(dout, x, Wt, 1, pad), R.conv_backward(dout, x, Wt, 1, pad)
    for g, w in zip(got, expected):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, **tol(dtype, np.abs(w).max() + 1))


@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=case_id)
def test_winograd_matches_reference(case, dtype, fused, rng, winograd_everywhere):
    check_against_reference(rng, case, dtype, fused)
    assert redone(winograd_everywhere) == 0 and redone(winograd_everywhere, "gradients") == 0


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 13), st.integers(1, 13),
       st.integers(1, 5), st.integers(0, 2), st.sampled_from(DTYPES), st.booleans(),
       st.sampled_from(AVX2), st.integers(0, 2**32 - 1))
def test_winograd_property(N, C, H, W, FN, pad, dtype, fused, avx2, seed):
    H, W = max(H, 3 - 2 * pad), max(W, 3 - 2 * pad)
    with cnncore.config_context(conv_algorithm="winograd", use_avx2=avx2):
        check_against_reference(np.random.default_rng(seed), (N, C, H, W, FN, pad), dtype, fused)


@pytest.mark.skipif(AVX2 == [False], reason="this CPU or compiler has no AVX2")
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 20), st.integers(1, 40),
       st.integers(0, 2), st.sampled_from(DTYPES), st.sampled_from([1, 2]),
       st.integers(0, 2**32 - 1))
def test_avx2_input_transform_matches_the_baseline_loops(n, C, H, W, pad, dtype, threads, seed):
    """The AVX2 input transform works in vectors of 8 tiles whose spare lanes write the next tile
    row, or on one thread the next plane (a buffer after the last plane, or on more threads after
    each), and read past the split plane: its V must equal the baseline loops' exactly, every entry
    written, nothing written past the planes' tiles."""
    H, W = max(H, 3 - 2 * pad), max(W, 3 - 2 * pad)
    TH, TW = wg.tile_grid(H, W, pad)
    T = n * TH * TW
    x = np.random.default_rng(seed).standard_normal(n * C * H * W).astype(dtype)
    results = []
    for avx2 in (True, False):
        V = np.full((16, C * T + 8), np.nan, dtype)
        work = np.full((threads, _winograd.input_work_size(H, W, pad)), np.nan, dtype)
        _winograd.input_transform(x, n, C, H, W, C * H * W, H * W, V, work, pad, threads, avx2)
        assert np.isfinite(V[:, :C * T]).all()
        assert np.isnan(V[:, C * T:]).all()
        results.append(V)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.skipif(AVX2 == [False], reason="this CPU or compiler has no AVX2")
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 20), st.integers(1, 40),
       st.sampled_from(DTYPES), st.booleans(), st.sampled_from([None, np.nan, np.inf, -np.inf]),
       st.integers(0, 2**32 - 1))
def test_avx2_output_transform_matches_the_baseline_loops(n, FN, OH, OW, dtype, relu, special,
                                                          seed):
    """The AVX2 output transform reads registers of 8 float32 or 4 float64 tiles across tile rows
    (masked at the plane's end) and stores whole registers past a line's end where later lines
    cover them: out must equal the baseline loops' exactly, and so must the count of planes with
    a value that is not finite, with nothing written past the planes (the last plane's stores are
    the ones that would reach past out)."""
    rng = np.random.default_rng(seed)
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    T = n * TH * TW
    M = rng.standard_normal((16, FN * T)).astype(dtype)
    if special is not None:
        M.flat[rng.integers(M.size)] = special
    b = rng.standard_normal(FN).astype(dtype)
    size, guard = n * FN * OH * OW, 40
    results = []
    for avx2 in (True, False):
        buffer = np.full(size + 2 * guard, 7.0, dtype)
        out = buffer[guard:guard + size].reshape(n, FN, OH, OW)
        work = np.full((1, _winograd.output_work_size(OH, OW)), np.nan, dtype)
        n_bad = _winograd.output_transform(M, b, out, work, relu, 1, avx2)
        assert (buffer[:guard] == 7.0).all() and (buffer[guard + size:] == 7.0).all()
        results.append((n_bad, out))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


needs_gemm = pytest.mark.skipif(not GEMM,
                                reason="this CPU or compiler has no AVX2 and FMA")


@needs_gemm
@given(st.integers(1, 70), st.integers(0, 40), st.integers(0, 80), st.integers(0, 2**32 - 1))
def test_gemm_matches_matmul(FN, C, T, seed):
    """The float32 products on AVX2 + FMA: blocks of 4 filters (and the 1-3 left over) times strips
    of 24 tiles (the last one partial, masked), against np.matmul; nothing read past V's C*T
    elements of each row (NaN there) nor written past M's FN*T."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((16, FN, C)).astype(np.float32)
    V = np.full((16, C * T + 9), np.nan, np.float32)
    V[:, :C * T] = rng.standard_normal((16, C * T))
    M = np.full((16, FN * T + 9), 7.0, np.float32)
    _winograd.gemm(U, V, M, T)
    want = np.matmul(U.astype(np.float64), V[:, :C * T].reshape(16, C, T).astype(np.float64))
    np.testing.assert_allclose(M[:, :FN * T].reshape(16, FN, T), want, rtol=1e-5,
                               atol=1e-6 * (C + 1))
    assert (M[:, FN * T:] == 7.0).all()


@needs_gemm
@given(st.integers(0, 14), st.integers(0, 14), st.integers(0, 60), st.integers(0, 2**32 - 1))
def test_gemm_nt_matches_matmul(C, FN, T, seed):
    """The weight gradient's float32 products on AVX2 + FMA: blocks of 4 channels (and the 1-3 left
    over) times 3 filters (and the 1-2 left over), the last T % 8 tiles masked, against np.matmul;
    nothing read past V's C*T and dM's FN*T elements of each row (NaN there) nor written past dU."""
    rng = np.random.default_rng(seed)
    V = np.full((16, C * T + 9), np.nan, np.float32)
    V[:, :C * T] = rng.standard_normal((16, C * T))
    dM = np.full((16, FN * T + 9), np.nan, np.float32)
    dM[:, :FN * T] = rng.standard_normal((16, FN * T))
    buf = np.full(16 * C * FN + 9, 7.0, np.float32)
    dU = buf[:16 * C * FN].reshape(16, C, FN)
    _winograd.gemm_nt(V, dM, dU, T)
    want = np.matmul(V[:, :C * T].reshape(16, C, T).astype(np.float64),
                     dM[:, :FN * T].reshape(16, FN, T).astype(np.float64).transpose(0, 2, 1))
    np.testing.assert_allclose(dU, want, rtol=1e-5, atol=1e-6 * (T + 1))
    assert (buf[16 * C * FN:] == 7.0).all()


@needs_gemm
@pytest.mark.parametrize("name, shapes, long", [
    ("gemm", dict(U=(16, 4, 3), V=(16, 3 * 10), M=(16, 4 * 10)), "M"),
    ("gemm_nt", dict(V=(16, 3 * 10), dM=(16, 4 * 10), dU=(16, 3, 4)), "dM")])
def test_gemms_check_their_operands(name, shapes, long):
    """3 channels, 4 filters, 10 tiles; then each of: too many tiles, V or the FN*T operand (long)
    one element short, an operand without 16 rows, negative T."""
    function = getattr(_winograd, name)
    args = dict({k: np.zeros(shape, np.float32) for k, shape in shapes.items()}, T=10)
    function(*args.values())
    bad = [dict(T=11), dict(T=-1), dict(V=args["V"][:, :-1]), {long: args[long][:, :-1]}]
    bad += [{k: args[k][:15]} for k in shapes]
    for change in bad:
        with pytest.raises(ValueError):
            function(*dict(args, **change).values())


def test_winograd_gradients_and_im2col_gradients_agree(rng, winograd_everywhere):
    # Forced, the gradients come from the Winograd transforms, none redone; by the rules (3 channels
    # are too few) from im2col + GEMM: both the reference's.
    x, Wt, b, pad = operands(rng, (2, 3, 9, 7, 4, 1), np.float64)
    dout = make(rng, K.conv_forward(x, Wt, b, 1, pad).shape, np.float64)
    got = K.conv_backward(dout, x, Wt, 1, pad)
    want = R.conv_backward(dout, x, Wt, 1, pad)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12 * np.abs(w).max())
    assert redone(winograd_everywhere, "gradients") == 0
    with cnncore.config_context(conv_algorithm="auto"):
        auto = K.conv_backward(dout, x, Wt, 1, pad)
        K.conv_forward(x, Wt, b, 1, pad)
    (g_step, g_algorithm), (f_step, f_algorithm) = [(r.step, r.algorithm)
                                                    for r in winograd_everywhere[-2:]]
    assert (g_step, g_algorithm, f_step) == ("gradients", "im2col", "forward")
    assert f_algorithm in ("im2col", "avx512_blocks")     # a direct algorithm, not Winograd
    for g, w in zip(auto, got):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12 * np.abs(w).max())


def test_forced_winograd_says_which_layers_it_cannot_run(rng):
    x = make(rng, (2, 3, 9, 7), np.float64)
    with cnncore.config_context(conv_algorithm="winograd"):
        for W_shape, stride, pad in (((4, 3, 5, 5), 1, 1), ((4, 3, 3, 3), 2, 1),
                                     ((4, 3, 3, 3), 1, 3)):
            with pytest.raises(ValueError, match="needs 3x3 filters, stride 1 and pad <= 2"):
                K.conv_forward(x, make(rng, W_shape, np.float64), 0.0, stride, pad)


@pytest.mark.parametrize("T, C", [(1024, 32), (2048, 64), (3072, 16)])
def test_strip_set_load_of_lines_4_kib_apart(T, C):
    # Lines a multiple of 4 KiB apart start in one set: each strip's 2-3 lines add one to each set.
    assert wg.strip_set_load(T, C) == C


@needs_gemm
@pytest.mark.parametrize("shape, pad, own", [((100, 32, 14, 14), 2, True),   # DeepConvNet conv4
                                             ((100, 32, 14, 14), 1, True),
                                             ((4, 64, 32, 32), 1, False)])   # nT = 256: 1 KiB apart
def test_own_gemm_unless_strips_crowd_l1_sets(rng, shape, pad, own):
    """The forward's products take the own GEMM (in forward_tiles' loop) where a strip of V spreads
    over the L1 cache's sets (DeepConvNet's nT = 1600 tiles among them), and np.matmul where it
    crowds into a few."""
    N, C, H, W = shape
    TH, TW = wg.tile_grid(H, W, pad)
    tiles = tiling.tiles(N, 16 * C * TH * TW * 4, cnncore.get_config()["tile_bytes"])
    counts = [(t.stop - t.start) * TH * TW for t in tiles]
    assert all(wg.own_gemm_fits(True, np.dtype(np.float32), T, C) for T in counts) == own
    if shape == (100, 32, 14, 14) and pad == 2:
        assert 1600 in counts
    x, Wt, b, _ = operands(rng, shape + (shape[1], pad), np.float32)
    out, want = K.conv_forward(x, Wt, b, 1, pad), R.conv_forward(x, Wt, b, 1, pad)
    np.testing.assert_allclose(out, want, **tol(np.float32, np.abs(want).max()))


@needs_gemm
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", [(100, 32, 14, 14, 32, 1), (100, 32, 14, 14, 32, 2),
                                  (7, 33, 9, 6, 5, 0), (3, 40, 8, 8, 70, 1), (1, 32, 5, 17, 3, 2)])
def test_forward_tiles_equals_the_tile_by_tile_path(case, relu, rng):
    """forward_tiles runs winograd.tile's three steps for every tile in one compiled loop: its
    output must equal calling winograd.tile tile by tile, to the bit."""
    x, Wt, b, pad = operands(rng, case, np.float32)
    N, C, H, W, FN, _ = case
    got = (K.conv_bias_relu_forward if relu else K.conv_forward)(x, Wt, b, 1, pad)
    U = wg.weights(Wt)
    TH, TW = wg.tile_grid(H, W, pad)
    tiles = tiling.tiles(N, 16 * C * TH * TW * 4, cnncore.get_config()["tile_bytes"])
    assert all(wg.own_gemm_fits(True, np.dtype(np.float32), (t.stop - t.start) * TH * TW, C)
               for t in tiles)
    scratch = wg.Scratch(1, max(t.stop - t.start for t in tiles), C, FN, H, W, pad,
                         np.dtype(np.float32))
    want = np.full(got.shape, np.nan, np.float32)
    for t in tiles:
        n = t.stop - t.start
        assert wg.tile((x[t].reshape(-1), C * H * W, H * W), n, C, H, W, U, b, pad, relu,
                       want[t], scratch.get(0, n), True, True)
    np.testing.assert_array_equal(got, want)


@needs_gemm
def test_forward_tiles_checks_its_operands(rng):
    x, Wt, b, pad = operands(rng, (4, 32, 6, 6, 8, 1), np.float32)
    U = wg.weights(Wt)
    scratch = wg.Scratch(2, 2, 32, 8, 6, 6, 1, np.dtype(np.float32))
    V, M, wi, wo = (np.zeros((2, size), np.float32) for size in scratch.sizes)
    out = np.zeros((4, 8, 6, 6), np.float32)
    args = dict(x=x.reshape(-1), C=32, H=6, W=6, pad=1, U=U, b=b, out=out,
                starts=np.array([0, 2, 4], np.intp), V=V, M=M, work_in=wi, work_out=wo,
                bad=np.zeros(2, np.uint8), relu=False, n_threads=2, avx2=True)
    _winograd.forward_tiles(**args)
    np.testing.assert_allclose(out, R.conv_forward(x, Wt, b, 1, 1), **tol(np.float32, 10))
    for bad in (dict(starts=np.array([0, 3, 4], np.intp)), dict(starts=np.array([0, 2, 5], np.intp)),
                dict(V=V[:, :-1]), dict(M=M[:1]), dict(b=b[:7]), dict(pad=0), dict(C=31),
                dict(bad=np.zeros(1, np.uint8)), dict(x=x.reshape(-1)[:-1]),
                dict(work_in=wi[:, :-1]), dict(work_out=wo[:, :-1]), dict(work_in=wi[:1]),
                dict(n_threads=0), dict(pad=-1)):
        with pytest.raises(ValueError):
            _winograd.forward_tiles(**dict(args, **bad))


def test_default_thresholds_take_winograd_on_deep_layers(rng):
    # DeepConvNet's conv4 (32 -> 32 channels, 14x14, pad 2) takes the path at the default thresholds,
    # forward and both gradients, and conv6's gradients (8x8 planes) too; its first layer (1 input
    # channel) does not.
    x, Wt, b, pad = operands(rng, (2, 32, 14, 14, 32, 2), np.float32)
    with trace() as steps:
        out, want = K.conv_forward(x, Wt, b, 1, pad), R.conv_forward(x, Wt, b, 1, pad)
        np.testing.assert_allclose(out, want, **tol(np.float32, np.abs(want).max()))
        dout = make(rng, out.shape, np.float32)
        got, want = K.conv_backward(dout, x, Wt, 1, pad), R.conv_backward(dout, x, Wt, 1, pad)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol(np.float32, np.abs(w).max()))
    assert [(r.step, r.algorithm, r.redone) for r in steps] == [("forward", "winograd", 0),
                                                               ("gradients", "winograd", 0)]
    # conv6 (64 -> 64 channels, 8x8 planes) too; 7x7 planes take the im2col gradients
    for H, algorithm in ((8, "winograd"), (7, "im2col")):
        x6, W6, _, _ = operands(rng, (2, 64, H, H, 64, 1), np.float32)
        d6 = make(rng, x6.shape, np.float32)
        with trace() as steps:
            got = K.conv_backward(d6, x6, W6, 1, 1)
        for g, w in zip(got, R.conv_backward(d6, x6, W6, 1, 1)):
            np.testing.assert_allclose(g, w, **tol(np.float32, np.abs(w).max()))
        assert [(r.step, r.algorithm) for r in steps] == [("gradients", algorithm)]
    with trace() as steps:
        K.conv_forward(x[:, :1], Wt[:, :1], b, 1, pad)
    assert steps[0].algorithm != "winograd"


def same_non_finite(got, want):
    """got equals want where want is not finite (NaN where NaN, the same infinities) and is
    close elsewhere."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.where(np.isinf(want), want, 0), np.where(np.isinf(got), got, 0))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **tol(got.dtype, np.abs(want[finite]).max()))


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "W", "dout"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_non_finite_like_the_reference(dtype, where, special, rng, winograd_everywhere):
    # Winograd's transforms subtract: an infinity in a patch can become NaN where the direct
    # convolution gives an infinity. Such tiles are recomputed directly, so they come out as the
    # reference's.
    x, Wt, b, pad = operands(rng, (3, 2, 8, 9, 3, 1), dtype)
    x, Wt = np.abs(x), np.abs(Wt)      # one sign everywhere: sums of infinities stay infinite
    if where == "x":
        x[1, 0, 3, 4] = special
    elif where == "W":
        Wt[2, 1, 1, 0] = special
    out, want = K.conv_forward(x, Wt, b, 1, pad), R.conv_forward(x, Wt, b, 1, pad)
    if where != "dout":
        assert not np.isfinite(want).all()
        same_non_finite(out, want)
    dout = np.abs(make(rng, want.shape, dtype))
    if where == "dout":
        dout[0, 1, 2, 2] = special
    for g, w in zip(K.conv_backward(dout, x, Wt, 1, pad), R.conv_backward(dout, x, Wt, 1, pad)):
        same_non_finite(g, w)


def test_winograd_overflow_falls_back(rng, winograd_everywhere):
    # Near float32's largest value the input transform (differences of inputs) overflows where the
    # direct convolution does not: the result is still the reference's.
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0] = 3e38
    x[0, 0, 2] = -3e38
    Wt = np.full((1, 1, 3, 3), 0.1, np.float32)
    out, want = K.conv_forward(x, Wt, 0, 1, 0), R.conv_forward(x, Wt, 0, 1, 0)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(out, want, **tol(np.float32, np.abs(want).max()))
    assert redone(winograd_everywhere) == 1


def test_winograd_weight_gradient_overflow_falls_back(rng, winograd_everywhere):
    # The backward input transform overflows on image 1 (3e38 - (-3e38) = inf) where the direct weight
    # gradient does not (its output gradient is 0, and inf * 0 would be NaN): that tile's dW is
    # computed directly and added to the other tiles' Winograd ones.
    x = make(rng, (4, 2, 6, 6), np.float32)
    x[1, 0, 0] = 3e38
    x[1, 0, 2] = -3e38
    Wt = make(rng, (3, 2, 3, 3), np.float32)
    dout = make(rng, (4, 3, 4, 4), np.float32)
    dout[1] = 0
    got, want = K.conv_backward(dout, x, Wt, 1, 0), R.conv_backward(dout, x, Wt, 1, 0)
    assert np.isfinite(want[1]).all()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol(np.float32, np.abs(w).max()))


def test_winograd_results_do_not_depend_on_threads(rng, winograd_everywhere):
    x, Wt, b, pad = operands(rng, (9, 3, 12, 10, 4, 1), np.float32)
    dout = make(rng, (9, 4, 12, 10), np.float32)
    try:
        results = []
        for n in (1, 2, 3):
            cnncore.set_num_threads(n)
            results.append((K.conv_bias_relu_forward(x, Wt, b, 1, pad),)
                           + K.conv_backward(dout, x, Wt, 1, pad))
    finally:
        cnncore.set_num_threads(None)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)
