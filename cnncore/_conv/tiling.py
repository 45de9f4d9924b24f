"""What the convolution algorithms share: tiles of images, each worker's scratch, thread counts."""
import numpy as np

from .._memory import empty as _output
from .._memory import zeros as _output_zeros
from .._threads import threads_for

# Tiles a convolution is cut into at least (when the batch has that many images), so that its
# threads, each working a tile at a time, finish together.
MIN_TILES = 4


def even_slices(size, n):
    """n slices covering range(size) in order, their lengths differing by at most one ([] if n is 0)."""
    edges = [size * k // n for k in range(n + 1)] if n else []
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def tiles(N, row_bytes, tile_bytes):
    """Even slices covering range(N): at most tile_bytes // row_bytes images each (at least one), and
    at least MIN_TILES of them when N allows, so that threads share the work. They depend on the
    shapes and tile_bytes only, never on the thread count: gradients are summed tile by tile."""
    most = max(1, tile_bytes // max(1, row_bytes))
    return even_slices(N, max(-(-N // most), min(N, MIN_TILES)))


def largest(tile_list):
    """Images in the largest tile (0 when there are none)."""
    return max((t.stop - t.start for t in tile_list), default=0)


def workers(tile_list, work):
    """Threads for a convolution touching work elements in all: at most one per tile."""
    return min(len(tile_list), threads_for(work))


class Scratch:
    """Each worker's tile buffers: (rows, n*L) arrays for a tile of n images, one per entry of rows,
    allocated on the worker's first tile with room for the largest tile."""

    def __init__(self, n_workers, rows, tile_list, L, dtype):
        self.buffers = [None] * n_workers
        self.rows, self.L, self.dtype = rows, L, dtype
        self.most = largest(tile_list)

    def get(self, worker, n):
        if self.buffers[worker] is None:
            self.buffers[worker] = [_output(r * self.most * self.L, self.dtype) for r in self.rows]
        return [b[:r * n * self.L].reshape(r, n * self.L) for b, r in zip(self.buffers[worker], self.rows)]


def padded_images(n_threads, x_shape, pad, dtype=np.float32):
    """The direct kernels' scratch: one zero-padded image per thread (its borders stay zero)."""
    N, C, H, W = x_shape
    return _output_zeros((n_threads, C * (H + 2 * pad) * (W + 2 * pad)), dtype)
