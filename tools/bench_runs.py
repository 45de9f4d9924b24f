"""Combine several `python -m cnncore bench --json` files into one table of per-row medians.

    python tools/bench_runs.py run1.json run2.json run3.json

On a machine whose speed drifts between runs (this VM throttles sustained use of both cores), one
run's row can be off by 30 % or more. For each (group, shape, dtype) this prints the median over the
runs of the reference's and cnncore's times, the median speed-up and its range, and the torch time
when the runs have it, the median %matmul (convolutions) and x floor (im2col, col2im, pooling).
Rows missing from a run are taken from the runs that have them.
"""
import json
import statistics
import sys

from cnncore import bench


def rows_by_case(paths):
    cases = {}
    for path in paths:
        with open(path) as f:
            for row in json.load(f)["rows"]:
                cases.setdefault((row["group"], row["shape"], row["dtype"]), []).append(row)
    return cases


def fmt(value, spec):
    return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)


def median_of(rows, key, scale=1.0):
    values = [r[key] * scale for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(paths):
    cases = rows_by_case(paths)
    print(f"medians over {len(paths)} runs: " + ", ".join(paths))
    print(f"{'group':24s} {'shape':34s} {'dtype':7s} {'numpy ms':>9s} {'cnncore ms':>10s} "
          f"{'speed-up':>8s} {'range':>12s} {'%matmul':>7s} {'x floor':>7s} {'torch ms':>9s}")
    for (group, shape, dtype), rows in cases.items():
        speedups = [r["speedup"] for r in rows]
        median_row = {"group": group, "shape": shape, "dtype": dtype,
                      "speedup": statistics.median(speedups),
                      "x_floor": median_of(rows, "x_floor"),
                      "matmul_fraction": median_of(rows, "matmul_fraction")}
        print(f"{group:24s} {shape:34s} {dtype:7s} "
              f"{statistics.median(r['numpy_ms'] for r in rows):9.2f} "
              f"{statistics.median(r['cython_ms'] for r in rows):10.2f} "
              f"{statistics.median(speedups):7.1f}x "
              f"{min(speedups):5.1f}-{max(speedups):4.1f}x "
              f"{fmt(median_of(rows, 'matmul_fraction', 100), '7.0f')} "
              f"{fmt(median_of(rows, 'x_floor'), '7.1f')} "
              f"{fmt(median_of(rows, 'torch_ms'), '9.2f')}  {bench._target_cell(median_row)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
