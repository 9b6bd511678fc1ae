"""The sampler benchmark runs end to end on a tiny grid and reports consistent costs."""

from gtlkit.experiments.bench import METHODS, _expected_rows, run_sampler_bench, to_markdown


def test_sampler_bench_tiny_grid():
    rows = run_sampler_bench(
        lengths=(8,), vocabs=(16,), batch=2, budget_s=5.0, d_den=16, d_ratio=8, progress=False
    )
    assert [r.method for r in rows] == list(METHODS)
    by = {r.method: r for r in rows}
    assert by["unguided"].ratio_rows_per_sample == 0
    assert by["exact"].ratio_rows_per_sample == 8 * 16
    assert by["topk8"].ratio_rows_per_sample == 8 * 8
    assert by["taylor"].ratio_rows_per_sample == 8
    assert by["naive"].ratio_rows_per_sample > by["exact"].ratio_rows_per_sample
    assert all(r.samples_per_s > 0 for r in rows)
    table = to_markdown(rows)
    assert table.count("\n") == len(rows) + 1


def test_expected_rows_formulas():
    assert _expected_rows("exact", 128, 4096, 1) == 128 * 4096
    assert _expected_rows("topk32", 128, 4096, 1) == 128 * 32
    assert _expected_rows("naive", 4, 10, 1) == 10 * (4 + 3 + 2 + 1)
