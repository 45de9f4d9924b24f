"""Winograd F(2x2, 3x3): 3x3 stride-1 convolutions computed tile by tile (pyext/winograd.pyx).

Each 2x2 block of outputs takes 16 multiplies instead of 36: the input tiles are transformed into
V (16, C*nT), the filters into U (16, FN, C), the 16 products M[xi] = U[xi] @ V[xi] run as GEMMs
with K = C, and the output transform turns M back into 2x2 outputs. Rounding differs from im2col +
GEMM in the last bits (float32: about 1e-6 of the inputs' scale). A tile whose result is not finite
is computed again by im2col + GEMM, so infinities and NaN come out exactly as the reference's.

The weight gradient sums dU[xi] = V[xi] @ dM[xi]^T over the tiles and transforms it back
(G^T dU G); the input gradient is the 3x3 convolution of d with the filters turned by 180 degrees,
C and FN swapped, padded by 2 - pad (hence pad <= 2).

The float32 products take the own AVX2 + FMA GEMM (pyext/winograd_gemm.h) where the CPU has it,
for the forward only where own_gemm_fits (its in-place reads of V must not crowd the L1 cache).
"""
import functools

import numpy as np

from .._ext import winograd as _winograd
from .._memory import empty as _output
from .._threads import run_tasks, single_threaded_blas
from . import im2col_gemm, tiling

# The most cache lines of one strip of V the own GEMM may put in one L1 set (see strip_set_load);
# more, and it reads slower than np.matmul's packed copy.
OWN_GEMM_MAX_SET_LOAD = 8

# The forward's tiles hold at most tile_bytes / FORWARD_TILE_SHARE of V: the output transform reads
# M (FN/C times V's size) right after the GEMMs wrote it, while it is still in the core's cache.
FORWARD_TILE_SHARE = 4


def own_gemm_fits(fma, dtype, T, C):
    """Whether the forward's 16 products over T tiles of C channels take the own GEMM."""
    return fma and dtype == np.float32 and strip_set_load(T, C) <= OWN_GEMM_MAX_SET_LOAD


@functools.lru_cache(maxsize=256)
def strip_set_load(T, C):
    """The most 64-byte lines that one strip of V read by the own GEMM (24 float32 tiles from each
    of C lines T tiles apart) puts in one set of an L1 cache of 64 sets (32-48 KiB, 8-12 ways, as
    on current x86), over the strip's alignments."""
    start = (np.arange(C)[:, None] * T + np.arange(16)) * 4   # bytes, (C, 16 alignments)
    first, last = start // 64, (start + 95) // 64
    worst = 0
    for j in range(16):
        lines = np.concatenate([first[:, j], first[:, j] + 1,
                                first[last[:, j] > first[:, j] + 1, j] + 2])
        worst = max(worst, int(np.bincount(lines % 64, minlength=64).max()))
    return worst


def weights(W, flip=False):
    """(FN, C, 3, 3) -> U (16, FN, C): G w G^T of each filter w (computed in double). flip=True gives
    the input gradient's: the filters turned by 180 degrees, C and FN swapped, (16, C, FN)."""
    FN, C = W.shape[:2]
    U = np.empty((16, C, FN) if flip else (16, FN, C), W.dtype)
    _winograd.weight_transform(W, U, flip)
    return U


def tile_grid(H, W, pad):
    """(TH, TW): 2x2 output tiles of a 3x3 stride-1 convolution over an H x W input."""
    return (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2


class Scratch:
    """Each worker's buffers for tiles of at most `most` images of C input and FN output planes:
    V, M (rows _winograd.xi_stride apart) and the transforms' scratch, allocated on the worker's
    first tile."""

    def __init__(self, n_workers, most, C, FN, H, W, pad, dtype):
        TH, TW = tile_grid(H, W, pad)
        OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
        self.C, self.FN, self.tiles_per_image, self.dtype = C, FN, TH * TW, dtype
        self.sizes = (16 * _winograd.xi_stride(C * most * TH * TW, dtype.itemsize),
                      16 * _winograd.xi_stride(FN * most * TH * TW, dtype.itemsize),
                      _winograd.input_work_size(H, W, pad), _winograd.output_work_size(OH, OW))
        self.buffers = [None] * n_workers

    def get(self, worker, n):
        """For n images: nT (their tiles), V (16, >= C*nT), M (16, >= FN*nT) and the transforms'
        scratch, (1, input_work_size) and (1, output_work_size)."""
        if self.buffers[worker] is None:
            self.buffers[worker] = [_output(size, self.dtype) for size in self.sizes]
        v_buf, m_buf, work_in, work_out = self.buffers[worker]
        nT, itemsize = n * self.tiles_per_image, self.dtype.itemsize
        V = v_buf[:16 * _winograd.xi_stride(self.C * nT, itemsize)].reshape(16, -1)
        M = m_buf[:16 * _winograd.xi_stride(self.FN * nT, itemsize)].reshape(16, -1)
        return nT, V, M, work_in[None], work_out[None]


def tile(planes, n, C, H, W, U, b, pad, relu, out, scratch, avx2, fma):
    """out (n, FN, OH, OW) = act(conv(x, w) + b) for n images x of C planes H x W read from
    planes = (flat, image_stride, channel_stride) as in input_transform; U (16, FN, C) from the 3x3
    filters w; scratch: this worker's (nT, V, M, work_in, work_out) from Scratch.get; avx2, fma:
    the CPU features the loops may use. Returns False when a result is not finite (out is then to
    be computed by im2col + GEMM)."""
    flat, image_stride, channel_stride = planes
    FN = U.shape[1]
    nT, V, M, work_in, work_out = scratch
    _winograd.input_transform(flat, n, C, H, W, image_stride, channel_stride, V, work_in, pad, 1,
                              avx2)
    if own_gemm_fits(fma, U.dtype, nT, C):
        _winograd.gemm(U, V, M, nT)
    else:
        np.matmul(U, V[:, :C * nT].reshape(16, C, nT), out=M[:, :FN * nT].reshape(16, FN, nT))
    return _winograd.output_transform(M, b, out, work_out, relu, 1, avx2) == 0


def forward(x, W, b, pad, relu, out, tile_bytes, avx2, fma):
    """out = act(conv(x, W) + b) for a 3x3 stride-1 layer; returns how many tiles came out
    non-finite and were computed again by im2col + GEMM."""
    N, C, H, Wd = x.shape
    U = weights(W)
    TH, TW = tile_grid(H, Wd, pad)
    tiles = tiling.tiles(N, 16 * C * TH * TW * x.dtype.itemsize,
                         max(1, tile_bytes // FORWARD_TILE_SHARE))
    n_workers = tiling.workers(tiles, N * 16 * C * TH * TW)
    scratch = Scratch(n_workers, tiling.largest(tiles), C, W.shape[0], H, Wd, pad, x.dtype)

    def direct(t):
        im2col_gemm.forward(x[t], W, b, 1, pad, relu, out[t], tile_bytes)

    if tiles and all(own_gemm_fits(fma, x.dtype, (t.stop - t.start) * TH * TW, C) for t in tiles):
        # All tiles in one compiled loop (_winograd.forward_tiles): the same results as the loop
        # below, without Python between tiles and without the pool's hand-off.
        V, M, work_in, work_out = (_output((n_workers, size), x.dtype) for size in scratch.sizes)
        starts = np.array([t.start for t in tiles] + [N], np.intp)
        bad = np.empty(len(tiles), np.uint8)
        _winograd.forward_tiles(x.reshape(-1), C, H, Wd, pad, U, b, out, starts, V, M, work_in,
                                work_out, bad, relu, n_workers, avx2)
        redone = np.flatnonzero(bad)
        for i in redone:
            direct(tiles[i])
        return len(redone)

    redone = []

    def work(worker, i):
        t = tiles[i]
        planes = (x[t].reshape(-1), C * H * Wd, H * Wd)
        n = t.stop - t.start
        if not tile(planes, n, C, H, Wd, U, b, pad, relu, out[t], scratch.get(worker, n), avx2, fma):
            redone.append(i)
            direct(t)

    with single_threaded_blas():
        run_tasks(work, len(tiles), n_workers)
    return len(redone)


def weight_grad_tile(x_planes, d_planes, n, C, FN, H, W, pad, dUT, scratch, avx2, fma):
    """dUT (16, C, FN) = the gradient of U (see tile) for n images x of C planes H x W and their
    output gradients d, both read as (flat, image_stride, channel_stride); scratch as for tile.
    Returns False when a value is not finite (this tile's dW is then to be computed by im2col +
    GEMM)."""
    nT, V, dM, work_in, work_out = scratch
    _winograd.input_transform(x_planes[0], n, C, H, W, x_planes[1], x_planes[2], V, work_in, pad, 1,
                              avx2)
    _winograd.grad_transform(d_planes[0], n, FN, H + 2 * pad - 2, W + 2 * pad - 2, d_planes[1],
                             d_planes[2], dM, work_out, 1)
    if fma and V.dtype == np.float32:
        _winograd.gemm_nt(V, dM, dUT, nT)
    else:
        dMT = dM[:, :FN * nT].reshape(16, FN, nT).transpose(0, 2, 1)
        np.matmul(V[:, :C * nT].reshape(16, C, nT), dMT, out=dUT)
    return bool(np.isfinite(dUT).all())


def weight_grad_finish(dUT_sum, W_shape, dtype):
    """dW (FN, C, 3, 3) = G^T dU G from the summed gradient of U."""
    dW = np.empty(W_shape, dtype)
    _winograd.weight_grad_transform(dUT_sum, dW)
    return dW
