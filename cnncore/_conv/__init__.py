"""The convolution algorithms behind cnncore.kernels, one module each, and the rules choosing them.

    select.py        the choice: a pure function of shapes, dtype, configuration and CPU features,
                     from one table of rules (each with its reason)
    tiling.py        what the algorithms share: tiles of images, per-worker scratch, thread counts
    im2col_gemm.py   unfold a tile of images into columns, one GEMM (any layer)
    avx2_rows.py     8 neighbouring outputs of a filter per AVX2 register (float32, stride 1),
                     forward and gradients
    avx2_blocks.py   16 filters per pair of AVX2 registers (float32), forward only
    avx512_blocks.py 16 filters per AVX-512 register (float64: 8): forward, and the float32
                     gradients of stride-1 3x3 / 5x5 layers
    winograd.py      Winograd F(2x2, 3x3) (3x3, stride 1), forward and gradients
    gradients.py     the tile loop of the gradients by im2col + GEMM and Winograd

Each algorithm takes checked, C-contiguous arrays in the compute dtype and fills outputs the facade
allocated. The settings that decide what is computed (algorithm, tile size, AVX2 use) come in as
arguments, read by the facade in the calling thread, so worker threads compute with the caller's
context-local configuration.
"""
