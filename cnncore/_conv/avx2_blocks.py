"""Direct convolution with 16 filters per pair of AVX2 registers (pyext/conv_avx2.pyx, forward):
float32, any stride; each output summed in registers from a zero-padded image, no columns, no GEMM.
Forward only: the gradients of its layers follow select's gradient rules."""
import numpy as np

from .._ext import conv_avx2 as _conv_avx2
from .._threads import threads_for
from .tiling import padded_images


def pack(W, lanes=16):
    """(FN, C, FH, FW) filters as blocks of lanes: (n_blocks, C*FH*FW*lanes), zeros past the last
    filter."""
    FN = W.shape[0]
    n_blocks = -(-FN // lanes)
    w = np.zeros((n_blocks * lanes, W[0].size), W.dtype)
    w[:FN] = W.reshape(FN, -1)
    return np.ascontiguousarray(w.reshape(n_blocks, lanes, -1).transpose(0, 2, 1)).reshape(
        n_blocks, -1)


def forward(x, W, b, stride, pad, relu, out):
    """out = act(conv(x, W) + b): the filters packed in blocks of 16, one zero-padded image buffer
    per thread."""
    N, FN = x.shape[0], W.shape[0]
    n_blocks = -(-FN // 16)
    n_threads = min(threads_for(N * FN * out.shape[2] * out.shape[3]), N * n_blocks)
    _conv_avx2.forward(x, pack(W), b, out, padded_images(n_threads, x.shape, pad), W.shape[2],
                       W.shape[3], stride, pad, relu, n_threads)
