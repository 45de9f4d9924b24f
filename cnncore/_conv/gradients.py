"""The gradients by im2col + GEMM and by Winograd, in one loop over tiles of images.

Per tile: d = dout (times the ReLU mask when fused) gathered into (FN, n*L), db summed from it, dW
by the weight-gradient algorithm (Winograd's dU per tile, or im2col's dW^T per tile, each summed in
tile order at the end) and dx by the input-gradient algorithm. A Winograd tile whose result is not
finite is computed again by im2col + GEMM.
"""
import numpy as np

from .._ext import conv as _conv
from .._memory import empty as _output
from .._memory import zeros as _output_zeros
from .._threads import run_tasks, single_threaded_blas
from . import im2col_gemm, tiling, winograd


def backward(x, dout, out, W, stride, pad, relu, need_dx, weight_grad, input_grad, settings):
    """(dx, dW, db, redone): weight_grad and input_grad are 'im2col' or 'winograd' (input_grad None
    when not need_dx); out is read only when relu; settings a select.Settings; redone counts the
    Winograd tiles whose dW or dx came out non-finite and were computed by im2col + GEMM."""
    N, FN, out_h, out_w = dout.shape
    C, H, Wd = x.shape[1:]
    FH, FW = W.shape[2], W.shape[3]
    dtype = x.dtype
    W2T = np.ascontiguousarray(W.reshape(FN, -1).T)
    K, L = W2T.shape[0], out_h * out_w
    dx = _output(x.shape, dtype) if need_dx else None
    tiles = tiling.tiles(N, K * L * dtype.itemsize, settings.tile_bytes)
    most = tiling.largest(tiles)
    dWT = _output_zeros((len(tiles), K, FN), dtype)     # per tile, summed in tile order at the end
    db = np.zeros((len(tiles), FN), dtype)
    n_workers = tiling.workers(tiles, N * K * L)
    scratch = tiling.Scratch(n_workers, (K, FN), tiles, L, dtype)
    avx2, fma = settings.avx2, settings.avx2_fma
    wino_dw = weight_grad == "winograd"
    wino_dx = need_dx and input_grad == "winograd"
    direct_dw = []     # tiles whose Winograd dW was not finite, computed by im2col + GEMM instead
    direct_dx = []     # likewise for dx
    if wino_dw:
        dUT = _output_zeros((len(tiles), 16, C, FN), dtype)
        dw_scratch = winograd.Scratch(n_workers, most, C, FN, H, Wd, pad, dtype)
    if wino_dx:
        U = winograd.weights(W, flip=True)
        zeros = np.zeros(C, dtype)
        dx_scratch = winograd.Scratch(n_workers, most, FN, C, out_h, out_w, 2 - pad, dtype)

    def tile(worker, i):
        t = tiles[i]
        n = t.stop - t.start
        cols, d = scratch.get(worker, n)
        _conv.gather_grad(dout[t].reshape(n, FN, L), out[t].reshape(n, FN, L), d, relu, 1)
        np.sum(d, axis=1, out=db[i])
        d_planes = (d.reshape(-1), L, n * L)
        if not (wino_dw and winograd.weight_grad_tile((x[t].reshape(-1), C * H * Wd, H * Wd),
                                                      d_planes, n, C, FN, H, Wd, pad, dUT[i],
                                                      dw_scratch.get(worker, n), avx2, fma)):
            if wino_dw:
                dUT[i] = 0
                direct_dw.append(i)
            im2col_gemm.weight_grad_tile(x[t], cols, d, FH, FW, stride, pad, dWT[i])
        if not need_dx:
            return
        if wino_dx and winograd.tile(d_planes, n, FN, out_h, out_w, U, zeros, 2 - pad, False,
                                     dx[t], dx_scratch.get(worker, n), avx2, fma):
            return
        if wino_dx:
            direct_dx.append(i)
        im2col_gemm.input_grad_tile(W2T, d, cols, dx[t], FH, FW, stride, pad)

    with single_threaded_blas():
        run_tasks(tile, len(tiles), n_workers)
    dW = None
    if wino_dw:
        dW = winograd.weight_grad_finish(dUT.sum(axis=0), W.shape, dtype)
    if not wino_dw or direct_dw:
        dW_direct = np.ascontiguousarray(dWT.sum(axis=0).T).reshape(W.shape)
        dW = dW_direct if dW is None else dW + dW_direct
    return dx, dW, db.sum(axis=0), len(direct_dw) + len(direct_dx)
