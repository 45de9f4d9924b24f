"""Direct convolution with 16 filters per AVX-512 register (pyext/conv_avx512.pyx; 8 in float64):
the forward, any stride, each output summed in registers from a zero-padded image, no columns, no
GEMM. The float32 gradients of stride-1 layers: dW from d laid out 16 filters per register, and
the input gradient as the same forward run over d (zero-padded by FH-1-pad) with the filters
flipped and their two channel axes swapped."""
import numpy as np

from .._ext import conv_avx512 as _conv_avx512
from .._memory import empty as _output
from .._memory import zeros as _output_zeros
from .._threads import threads_for
from . import tiling
from .avx2_blocks import pack
from .tiling import padded_images


def forward(x, W, b, stride, pad, relu, out, mask=None):
    """out = act(conv(x, W) + b), float32 or float64; with mask (float32), x is zeroed where
    mask <= 0 first."""
    N, FN = x.shape[0], W.shape[0]
    lanes = 64 // x.dtype.itemsize
    n_pairs = -(-FN // (2 * lanes))
    n_threads = min(threads_for(N * FN * out.shape[2] * out.shape[3]), N * n_pairs)
    bias = np.zeros(-(-FN // lanes) * lanes, x.dtype)
    bias[:FN] = b
    _conv_avx512.forward(x, mask, pack(W, lanes), bias, out,
                         padded_images(n_threads, x.shape, pad, x.dtype),
                         W.shape[2], W.shape[3], stride, pad, relu, n_threads)


def input_grad(dout, out, W, pad, dx):
    """dx of a stride-1 layer with square filters, pad <= FH - 1, from dout (masked where out <= 0
    unless out is None). W must be finite: the sums multiply the zeros around d by the weights
    too."""
    flipped = np.ascontiguousarray(W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    forward(dout, flipped, np.zeros(flipped.shape[0], np.float32), 1, W.shape[2] - 1 - pad,
            False, dx, mask=out)


def weight_grad(x, dout, out, W, pad, tile_bytes):
    """(dW, db) of a stride-1 layer with filters 3 or 5 wide, summed tile by tile (out: the
    forward's output when fused with ReLU, else None)."""
    N, C, H, Wd = x.shape
    FN, FH, FW = W.shape[0], W.shape[2], W.shape[3]
    OH, OW = dout.shape[2:]
    K = C * FH * FW
    tiles = tiling.tiles(N, K * OH * OW * x.dtype.itemsize, tile_bytes)
    starts = np.array([t.start for t in tiles] + [N], np.intp)
    n_threads = tiling.workers(tiles, N * K * OH * OW)
    sums = _output_zeros((len(tiles), K + 1, -(-FN // 16) * 16), np.float32)
    if tiles:
        _conv_avx512.weight_grad(x, dout, dout if out is None else out, starts, sums,
                                 tiling.padded_images(n_threads, x.shape, pad),
                                 _output((n_threads, OH * OW * 32), np.float32),
                                 FH, FW, pad, out is not None, n_threads)
    total = sums.sum(axis=0)
    return np.ascontiguousarray(total[:K, :FN].T).reshape(W.shape), total[K, :FN]
