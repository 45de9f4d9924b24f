"""Direct convolution with 8 neighbouring outputs of a filter per AVX2 register (pyext/conv_avx2.pyx):
float32, stride 1, output rows of 8 to ROWS_MAX_WIDTH. Forward, and the gradients (dW, db and dx
summed in registers from d's rows, no columns)."""
import numpy as np

from .._ext import conv_avx2 as _conv_avx2
from .._memory import empty as _output
from .._memory import zeros as _output_zeros
from .._threads import threads_for
from . import tiling

ROWS_MAX_WIDTH = _conv_avx2.ROWS_MAX_WIDTH


def forward(x, W, b, pad, relu, out):
    """out = act(conv(x, W) + b), stride 1: one zero-padded image buffer per thread."""
    N, FN = x.shape[0], W.shape[0]
    n_threads = min(threads_for(N * FN * out.shape[2] * out.shape[3]), N)
    _conv_avx2.forward_rows(x, W.reshape(FN, -1), b, out, tiling.padded_images(n_threads, x.shape, pad),
                            W.shape[2], W.shape[3], pad, relu, n_threads)


def backward(x, dout, out, W, pad, need_dx, tile_bytes):
    """(dx, dW, db) of a stride-1 float32 layer, dW and db summed tile by tile (out: the forward's
    output when fused with ReLU, else None; dx None unless need_dx). dx needs finite filters (the
    sums multiply the zeros around d by the weights too).

    None when dW or db is not finite: the zero lanes past a row's last output meet image cells
    outside its windows, so an infinity there gives NaN where the reference has none; the caller
    then computes the gradients another way."""
    N, C, H, Wd = x.shape
    FN, FH, FW = W.shape[0], W.shape[2], W.shape[3]
    OH, OW = dout.shape[2:]
    n_vec = -(-OW // 8)
    PH, PW, K = H + 2 * pad, n_vec * 8 + FW - 1, C * FH * FW
    # d's planes: rows of n_vec*8 (zeros past OW) for dW; dx also reads the zeros around d
    top, left = (max(0, FH - 1 - pad), max(0, FW - 1 - pad)) if need_dx else (0, 0)
    DH, DW = OH + 2 * top, left + max(n_vec * 8, OW + left)
    tap = ((np.arange(C, dtype=np.intp)[:, None, None] * PH + np.arange(FH)[:, None]) * PW
           + np.arange(FW)).reshape(-1)
    tiles = tiling.tiles(N, K * OH * OW * x.dtype.itemsize, tile_bytes)
    starts = np.array([t.start for t in tiles] + [N], np.intp)
    n_threads = tiling.workers(tiles, N * K * OH * OW)
    sums = _output_zeros((len(tiles), FN * K + FN, 8), np.float32)
    dx = _output(x.shape, np.float32) if need_dx else None
    w = np.ascontiguousarray(W.transpose(1, 0, 2, 3)).reshape(C, -1) if need_dx else None
    if tiles:
        _conv_avx2.backward_rows(x, dout, dout if out is None else out, w, starts, tap, sums, dx,
                                 _output_zeros((n_threads, C * PH * PW), np.float32),
                                 _output_zeros((n_threads, FN * DH * DW), np.float32),
                                 FH, FW, pad, PW, top, left, DH, DW, out is not None, n_threads)
    total = sums.sum(axis=2).sum(axis=0)
    if not np.isfinite(total).all():
        return None
    return dx, total[:FN * K].reshape(W.shape), total[FN * K:]
