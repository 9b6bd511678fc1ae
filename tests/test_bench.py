"""The sampler benchmark runs end to end on a tiny grid and reports consistent costs."""

import pytest

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


def test_amortised_and_unigram_cost_one_row_per_step_and_memory_is_recorded():
    rows = run_sampler_bench(
        lengths=(8,),
        vocabs=(16,),
        methods=("unguided", "amortised", "unigram"),
        batch=2,
        budget_s=5.0,
        d_den=16,
        d_ratio=8,
        progress=False,
    )
    by = {r.method: r for r in rows}
    assert by["amortised"].ratio_rows_per_sample == 8  # one head pass per reveal step
    assert by["unigram"].ratio_rows_per_sample == 8  # one closed-form score row per step
    assert not by["unigram"].extrapolated
    assert all(r.peak_mem_mb is not None and r.peak_mem_mb >= 0 for r in rows)
    assert "peak MB" in to_markdown(rows)


def test_shipped_arch_uses_the_shipped_weights_only_at_their_own_shape():
    import pytest

    small = run_sampler_bench(
        lengths=(8,), vocabs=(32,), methods=("unguided",), batch=1, arch="shipped", progress=False
    )
    assert not small[0].trained_weights and small[0].arch == "shipped"
    own = run_sampler_bench(
        lengths=(128,),
        vocabs=(4096,),
        methods=("unguided",),
        batch=1,
        budget_s=0.0,  # predicted only: the shipped weights load, nothing is sampled
        arch="shipped",
        progress=False,
    )
    assert own[0].trained_weights and own[0].extrapolated and own[0].peak_mem_mb is None
    assert "(trained)" in to_markdown(own)
    with pytest.raises(ValueError, match="unknown methods"):
        run_sampler_bench(lengths=(8,), vocabs=(16,), methods=("fast",), progress=False)
    with pytest.raises(ValueError, match="arch must be one of"):
        run_sampler_bench(lengths=(8,), vocabs=(16,), methods=("unguided",), arch="big")


def test_partial_runs_measure_some_steps_and_scale_them():
    kw = dict(lengths=(16,), vocabs=(16,), batch=2, d_den=16, d_ratio=8, progress=False)
    methods = ("unguided", "topk8", "naive")
    full = {r.method: r for r in run_sampler_bench(methods=methods, budget_s=1e9, **kw)}
    part = {
        r.method: r for r in run_sampler_bench(methods=methods, budget_s=0.0, partial_steps=4, **kw)
    }
    for m in ("unguided", "topk8"):
        assert part[m].measured_steps == 4 and not part[m].extrapolated
        assert part[m].peak_mem_mb is not None and part[m].seconds_per_batch > 0
        assert full[m].measured_steps is None
    assert part["naive"].extrapolated and part["naive"].measured_steps is None
    assert "†" in to_markdown(list(part.values()))


def test_cost_slopes_recover_known_exponents_and_the_plot_is_written(tmp_path):
    from gtlkit.experiments.bench_plots import cost_slopes, plot_sampler_cost

    rows = [
        {
            "L": L,
            "V": V,
            "method": m,
            "seconds_per_batch": c * L**a * V**b,
            "batch": 8,
            "extrapolated": L == 1024,
        }
        for m, c, a, b in (("unguided", 1e-6, 2.0, 0.5), ("topk32", 3e-6, 2.5, 0.25))
        for L in (128, 512, 1024)
        for V in (4096, 30522)
    ]
    s = cost_slopes(rows)
    assert abs(s["L"]["unguided"][4096] - 2.0) < 1e-9 and abs(s["L"]["topk32"][30522] - 2.5) < 1e-9
    assert abs(s["V"]["unguided"][128] - 0.5) < 1e-9 and abs(s["V"]["topk32"][1024] - 0.25) < 1e-9
    assert cost_slopes(rows[:1])["L"]["unguided"][4096] is None  # one point: no slope
    path = plot_sampler_cost(rows, tmp_path / "cost.png")
    assert path.is_file() and path.stat().st_size > 1000


def test_sampler_command_measures_partial_runs_and_writes_the_cost_plot(tmp_path):
    import json

    from typer.testing import CliRunner

    from gtlkit.experiments.bench import bench_app

    args = ["sampler", "--lengths", "8,16", "--vocabs", "16", "--methods", "unguided,topk8"]
    args += ["--budget-s", "0", "--partial-steps", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["measured_steps"] == 2 for r in rows)
    assert "†" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "cost.png").is_file()
    slopes = json.loads((tmp_path / "slopes.json").read_text())
    assert set(slopes["L"]) == {"unguided", "topk8"}


def test_a_partial_run_takes_exactly_its_steps_and_keeps_the_given_tokens():
    """The timed partial run reveals only ``masked`` positions: one denoiser call per step."""
    import torch

    from gtlkit.experiments.bench import _run
    from gtlkit.nn import DenoiserNet, TransformerConfig

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, x, t):
            self.calls += 1
            return self.net(x, t)

    L, V = 16, 8
    den = Counting(DenoiserNet(TransformerConfig(V, L, d_model=16, n_layers=1, n_heads=2)))
    for masked in (3, 6):
        den.calls = 0
        secs = _run("unguided", den.eval(), None, L, V, 2, "cpu", masked=masked)
        assert den.calls == masked and secs > 0
    with pytest.raises(ValueError, match="planned sampler"):
        _run("naive", den, None, L, V, 2, "cpu", masked=2)
