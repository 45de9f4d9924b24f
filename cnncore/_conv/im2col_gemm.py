"""im2col + GEMM, tile by tile: any layer, any dtype, any stride.

Forward: a tile of images is unfolded into columns (K = C*FH*FW rows, n*OH*OW columns), multiplied
by the (FN, K) weights in one GEMM, and the bias (and ReLU) added on the way out. Gradients (called
per tile by gradients.py): dW^T = cols @ d^T, and dx = fold(W^T @ d). Never more than one tile of
columns per worker exists, so memory does not grow with the batch.
"""
import numpy as np

from .._ext import conv as _conv
from .._threads import run_tasks, single_threaded_blas
from . import tiling


def forward(x, W, b, stride, pad, relu, out, tile_bytes):
    """out = act(conv(x, W) + b) through unfold + one GEMM per tile of images."""
    N, FN, out_h, out_w = out.shape
    FH, FW = W.shape[2], W.shape[3]
    W2 = W.reshape(FN, -1)
    K, L = W2.shape[1], out_h * out_w
    tiles = tiling.tiles(N, K * L * x.dtype.itemsize, tile_bytes)
    n_workers = tiling.workers(tiles, N * K * L)
    scratch = tiling.Scratch(n_workers, (K, FN), tiles, L, x.dtype)

    def tile(worker, i):
        t = tiles[i]
        n = t.stop - t.start
        cols, y = scratch.get(worker, n)
        _conv.unfold(x[t], cols, FH, FW, stride, pad, 1)
        # np.matmul, not np.dot: for small products np.dot's BLAS call skips zero entries, so an inf
        # weight times a padded (zero) column gave 0 where the reference's @ gives NaN.
        np.matmul(W2, cols, out=y)
        _conv.bias_act(y, b, out[t].reshape(n, FN, L), relu, 1)

    with single_threaded_blas():
        run_tasks(tile, len(tiles), n_workers)


def weight_grad_tile(x_tile, cols, d, FH, FW, stride, pad, dWT):
    """dWT (K, FN) = the weight gradient (transposed) of one tile: x_tile's columns (into cols)
    times d^T, d (FN, n*L) the tile's output gradients."""
    _conv.unfold(x_tile, cols, FH, FW, stride, pad, 1)
    # cols @ d^T rather than d @ cols^T: the long inner dimension n*L is the right way round for
    # OpenBLAS only in this order.
    np.matmul(cols, d.T, out=dWT)


def input_grad_tile(W2T, d, cols, dx_tile, FH, FW, stride, pad):
    """dx_tile = fold(W2T @ d) for one tile; cols (K, n*L) is overwritten (spent or unused)."""
    np.matmul(W2T, d, out=cols)
    _conv.fold(cols, dx_tile, FH, FW, stride, pad, 1)
