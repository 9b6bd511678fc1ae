"""Sampler benchmark (same as `gtl bench sampler`).

    python benchmarks/sampler.py --out docs/bench-cpu          # full grid, L in {32,128}, V in {64,1024,4096}
    python benchmarks/sampler.py --lengths 32 --vocabs 64      # a quick look

Writes results.json and table.md (with the machine) under --out; docs/benchmarks.md holds the
latest tables.
"""

from gtlkit.experiments.bench import bench_app

if __name__ == "__main__":
    bench_app(["sampler", *__import__("sys").argv[1:]])
