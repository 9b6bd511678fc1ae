"""Ratio estimation: classifier prior correction, ratio regression, noisy classifier, bundle.

The reference problem is enumerable (V = 3, L = 4): a random source ``p`` and a target
``q(x) ∝ p(x) exp(sum_l W[l, x_l])``, so ``gtlkit.oracle.exact_log_ratio`` gives the true
``log h_t`` on every noisy input. Errors are mean absolute errors of ``log h`` weighted by how
often each noisy input occurs under noised source data, averaged over a grid of times.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from gtlkit.guidance.models import (
    DomainClassifier,
    GuidanceBundle,
    NoisyClassifierRatio,
    RatioNetwork,
    load_wrapper,
)
from gtlkit.hub import LoadError
from gtlkit.metrics import noisy_log_loss
from gtlkit.nn import RecurrentScalarNet, ScalarNet, TransformerConfig
from gtlkit.oracle import (
    EnumeratedDistribution,
    all_sequences,
    exact_denoiser,
    exact_log_ratio,
)
from gtlkit.processes import MaskedProcess, Process, UniformProcess
from gtlkit.training.ratio import (
    RatioConfig,
    classifier_metrics,
    fit_ratio,
    make_net_config,
    noisy_overlap,
    ratio_regression_loss,
    train_domain_classifier,
    train_noisy_classifier,
    train_ratio_net,
)

V, L = 3, 4
TIMES = tuple((i + 0.5) / 10 for i in range(10))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets run fastest on one thread, and much faster on a contended machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(**kw) -> RatioConfig:
    """A small transformer-body regression setup (the stage tests); fit_ratio's defaults are a
    recurrent noisy classifier (test_defaults_are_the_measured_recipe)."""
    base = dict(
        arch="transformer",
        estimator="regression",
        d_model=32,
        n_layers=1,
        n_heads=2,
        batch_size=128,
        lr=3e-3,
        warmup_steps=20,
        ema_decay=None,
        progress=False,
        mixed_precision="no",
        cycle_weight=0.0,
        classifier_steps=300,
        ratio_steps=300,
        noisy_steps=300,
    )
    return RatioConfig(**(base | kw))


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    p = EnumeratedDistribution.random(V, L, g, sharpness=0.5)
    W = (torch.rand(L, V, generator=g, dtype=torch.float64) - 0.5) * 2.4
    X = all_sequences(V, L)
    q = EnumeratedDistribution(p.probs * W[torch.arange(L)[None], X].sum(-1).exp(), V, L)
    return {"p": p, "q": q, "source": p.sample(20000, g), "target": q.sample(20000, g)}


def clean_log_ratio(problem):
    p, q = problem["p"], problem["q"]
    return lambda x: (q.log_prob(x) - p.log_prob(x)).float()


def weighted_log_h_error(log_ratio, p, q, process: Process, times=TIMES) -> float:
    """``E_t E_{z ~ p_t} |log_ratio(z, t) - log h_t(z)|`` by enumeration of every noisy input."""
    exact = exact_log_ratio(q, p, process)
    if isinstance(process, MaskedProcess):
        Z = all_sequences(V + 1, L)  # every partially masked input
        k = (Z != V).sum(-1)
        pU = p.marginal(Z, torch.zeros(len(Z)), process)
    else:
        Z = all_sequences(V, L)
    total = 0.0
    for t in times:
        tt = torch.full((len(Z),), float(t))
        if isinstance(process, MaskedProcess):
            a = float(process.schedule.alpha(torch.tensor(float(t), dtype=torch.float64)))
            w = pU * a**k * (1 - a) ** (L - k)
        else:
            w = p.marginal(Z, tt, process)
        assert abs(float(w.sum()) - 1) < 1e-6
        total += float((w * (log_ratio(Z, tt).double() - exact(Z, tt)).abs()).sum())
    return total / len(times)


def zero_baseline(problem, process) -> float:
    return weighted_log_h_error(
        lambda z, t: torch.zeros(len(z)), problem["p"], problem["q"], process
    )


# --------------------------------------------------------------------------------------------
# Losses and shapes
# --------------------------------------------------------------------------------------------


def test_regression_loss_rejects_broadcasting_shapes():
    out, log_r = torch.zeros(8, 1), torch.zeros(8)
    for space in ("ratio", "poisson", "log"):
        with pytest.raises(ValueError, match=r"\[B, B\]"):
            ratio_regression_loss(out, log_r, space)
        with pytest.raises(ValueError):
            ratio_regression_loss(torch.zeros(8), torch.zeros(4), space)
    with pytest.raises(ValueError, match="space"):
        ratio_regression_loss(torch.zeros(3), torch.zeros(3), "kl")


@pytest.mark.parametrize("space", ["ratio", "poisson", "log"])
def test_regression_loss_minimisers(space):
    """A constant output fitted to a batch of targets lands on log E[r] (ratio, poisson) or
    E[log r] (log): the Jensen gap between the two is exactly what the log space gets wrong."""
    log_r = torch.tensor([-2.0, -1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    log_norm = 0.3
    c = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [c],
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = ratio_regression_loss(c.expand(5), log_r, space, log_norm=log_norm)
        loss.backward()
        return loss

    opt.step(closure)
    if space == "log":
        expected = float(log_r.mean())
    else:
        expected = float(torch.logsumexp(log_r, 0) - math.log(5)) - log_norm
    assert float(c.detach()) == pytest.approx(expected, abs=1e-6)
    # per-sample, not batch-mean: the loss of a non-constant output matches a manual sum
    out = torch.linspace(-1, 1, 5, dtype=torch.float64)
    manual = {
        "log": (out - log_r) ** 2,
        "ratio": (out.exp() - (log_r - log_norm).exp()) ** 2,
        "poisson": out.exp() - (log_r - log_norm).exp() * out,
    }[space].mean()
    assert float(ratio_regression_loss(out, log_r, space, log_norm)) == pytest.approx(float(manual))


def test_wrappers_shapes_mask_ids_and_soft_inputs():
    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=V,
        seq_len=L,
        d_model=16,
        n_layers=1,
        n_heads=2,
        cond_dim=16,
        time_conditioning=False,
    )
    clf = DomainClassifier(ScalarNet(cfg), prior_log_odds=math.log(0.25))
    x = torch.tensor([[0, 1, 2, 2], [0, 1, 2, V], [V, V, V, V]])
    out = clf.log_ratio_clean(x)
    assert out.shape == (3,) and torch.isfinite(out).all()
    assert torch.allclose(out, clf.logit(x) - math.log(0.25))
    # the [MASK] id has its own embedding row: it is not silently clamped to token V - 1
    clamped = x.clamp(max=V - 1)
    assert not torch.allclose(clf.logit(x)[1:], clf.logit(clamped)[1:])
    for bad in (
        torch.tensor([[0, 1, 2, V + 1]]),
        torch.tensor([[0, -1, 2, 1]]),
        torch.zeros(2, 4),
        torch.zeros(4, dtype=torch.long),
    ):
        with pytest.raises(ValueError):
            clf.log_ratio_clean(bad)

    tcfg = TransformerConfig(
        vocab_size=V, seq_len=L, d_model=16, n_layers=1, n_heads=2, cond_dim=16
    )
    ratio = RatioNetwork(ScalarNet(tcfg), log_norm=0.7)
    t = torch.rand(3)
    lh = ratio(x, t)
    assert lh.shape == (3,) and not lh.requires_grad
    assert torch.allclose(lh, ratio.net(x, t) + 0.7)
    with pytest.raises(ValueError, match="t must be"):
        ratio(x, torch.rand(2))
    # differentiable soft path agrees with the id path on hard one-hots, for V+1 and V columns
    onehot = torch.nn.functional.one_hot(x, V + 1).float().requires_grad_(True)
    soft = ratio.log_ratio_soft(onehot, t)
    assert torch.allclose(soft.detach(), lh, atol=1e-5)
    (grad,) = torch.autograd.grad(soft.sum(), onehot)
    assert grad.shape == onehot.shape and grad.abs().sum() > 0
    hard = torch.tensor([[0, 1, 2, 2]])
    narrow = torch.nn.functional.one_hot(hard, V).float()
    assert torch.allclose(
        ratio.log_ratio_soft(narrow, t[:1]).detach(), ratio(hard, t[:1]), atol=1e-5
    )
    noisy = NoisyClassifierRatio(ScalarNet(tcfg), prior_log_odds=1.5)
    assert torch.allclose(noisy(x, t), noisy.net(x, t) - 1.5)


def test_training_catches_a_b1_output(problem, monkeypatch):
    """The research code's defect: a [B, 1] output against [B] targets must not train silently."""
    forward = ScalarNet.forward
    monkeypatch.setattr(ScalarNet, "forward", lambda self, x, t=None: forward(self, x, t)[:, None])
    cfg = tiny_config(ratio_steps=2, noisy_steps=2, classifier_steps=2)
    net_cfg = make_net_config(cfg, V, L, time_conditioning=True)
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        train_ratio_net(
            problem["source"][:256], MaskedProcess(V), clean_log_ratio(problem), net_cfg, cfg
        )
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        train_noisy_classifier(
            problem["source"][:256], problem["target"][:256], MaskedProcess(V), net_cfg, cfg
        )


# --------------------------------------------------------------------------------------------
# Stage 1: classifier prior correction on an analytic case
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("balance", ["frequency", "weighted", "batch"])
def test_classifier_prior_correction(balance):
    """V = 2, L = 2 with data sets whose empirical laws are exactly p and q and N_s = 4 N_t.

    The Bayes logit is log q/p + prior_log_odds; after correction every mode must give log q/p,
    and in "frequency" mode the raw logit must sit log(N_t / N_s) below it.
    """
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    seqs = all_sequences(2, 2)
    source = seqs.repeat_interleave((p * 400).long(), dim=0)  # 400 rows, law exactly p
    target = seqs.repeat_interleave((q * 100).long(), dim=0)  # 100 rows, law exactly q
    # "weighted" sees a quarter as many target rows per step as "batch": it needs more steps
    steps = 600 if balance == "weighted" else 250
    cfg = tiny_config(balance=balance, classifier_steps=steps, lr=1e-2, d_model=16)
    net_cfg = make_net_config(cfg, 2, 2, time_conditioning=False)
    clf, metrics = train_domain_classifier(source, target, net_cfg, cfg)
    exact = (q / p).log()
    est = clf.log_ratio_clean(seqs)
    print(f"\n[{balance}] exact log q/p {exact.tolist()}\n  corrected {est.tolist()}")
    assert torch.allclose(est, exact.float(), atol=0.2), (est, exact)
    expected_prior = math.log(100 / 400) if balance == "frequency" else 0.0
    assert clf.prior_log_odds == pytest.approx(expected_prior)
    assert metrics["prior_log_odds"] == pytest.approx(expected_prior)
    assert torch.allclose(clf.logit(seqs), exact.float() + expected_prior, atol=0.2)
    assert metrics["on"] == "train" and 0.5 < metrics["auroc"] <= 1.0
    assert 0.0 <= metrics["ece"] <= 0.2 and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("imbalance", [100, 500])
def test_weighted_balance_prior_log_odds_at_strong_imbalance(imbalance):
    """V = 2, L = 2, exact laws, N_s = imbalance * N_t: balance="weighted" must give log q/p.

    The old pooled batches with weights normalised by the batch's weight sum came out at
    -0.4 (100:1) and -2.7 (500:1) on average: most batches held no target row, and a batch
    that held one gave it a weight share far from its share of the data. With the weights
    fixed but one target row per batch the log-odds still wandered by up to 1.2 nats.
    """
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    seqs = all_sequences(2, 2)
    source = seqs.repeat_interleave((p * 100 * imbalance).long(), dim=0)
    target = seqs.repeat_interleave((q * 100).long(), dim=0)  # 100 rows
    cfg = tiny_config(balance="weighted", classifier_steps=300, lr=1e-2, d_model=16, ema_decay=0.99)
    clf, metrics = train_domain_classifier(source, target, make_net_config(cfg, 2, 2, False), cfg)
    err = clf.log_ratio_clean(seqs) - (q / p).log()
    print(f"\n[{imbalance}:1] corrected - exact log q/p: {err.tolist()}")
    assert metrics["prior_log_odds"] == 0.0
    assert abs(float((p * err).sum())) < 0.15 and abs(float((q * err).sum())) < 0.15
    assert float(err.abs().max()) < 0.4


def test_classifier_metrics_with_exact_and_miscalibrated_ratios(problem):
    """With the exact log q/p the held-out probabilities are calibrated for the set's class mix;
    a log-ratio off by a constant (a forgotten prior correction) is visibly miscalibrated."""
    src, tgt = problem["source"][:8000], problem["target"][:2000]
    exact = clean_log_ratio(problem)
    good = classifier_metrics(exact, src, tgt)
    bad = classifier_metrics(lambda x: exact(x) + math.log(4.0), src, tgt)
    print(
        f"\nexact log r: ECE+ {good['ece_positive']:.4f} acc {good['accuracy']:.3f}; "
        f"shifted by log 4: ECE+ {bad['ece_positive']:.4f} acc {bad['accuracy']:.3f}"
    )
    assert good["ece_positive"] < 0.02 and bad["ece_positive"] > 0.1
    assert good["auroc"] == pytest.approx(bad["auroc"])  # AUROC ignores constants
    assert good["accuracy"] >= 0.8 - 0.01  # Bayes rule beats always guessing "source"
    assert good["overlap"]["ok"] and good["overlap"]["mean_weight"] == pytest.approx(1, abs=0.05)


# --------------------------------------------------------------------------------------------
# Stage 2: the ratio network recovers log h (ratio vs poisson vs log space)
# --------------------------------------------------------------------------------------------


def test_ratio_net_recovers_log_h_masked(problem):
    process = MaskedProcess(V)
    base = zero_baseline(problem, process)
    p, q = problem["p"], problem["q"]
    # the log-space optimum E[log r | z] (computed exactly): its error is the Jensen gap
    Z = all_sequences(V + 1, L)
    post = p._likelihood(Z, torch.zeros(len(Z)), process) * p.probs[None]
    post = post / post.sum(-1, keepdim=True)
    e_log_r = post @ (q.probs.log() - p.probs.log())
    table = {tuple(z.tolist()): float(v) for z, v in zip(Z, e_log_r, strict=True)}
    jensen = weighted_log_h_error(
        lambda z, t: torch.tensor([table[tuple(r.tolist())] for r in z]), p, q, process
    )
    errors = {}
    for space in ("ratio", "poisson", "log"):
        cfg = tiny_config(space=space, time_conditioning=False)
        net_cfg = make_net_config(cfg, V, L, time_conditioning=False)
        model, metrics = train_ratio_net(
            problem["source"],
            process,
            clean_log_ratio(problem),
            net_cfg,
            cfg,
            val_source=problem["source"][:2000],
        )
        assert model.space == space
        errors[space] = weighted_log_h_error(model, p, q, process)
        if space != "log":  # E_p[h_t(z_t)] = 1 for the true h
            assert metrics["mean_h_source_noised"] == pytest.approx(1.0, abs=0.1)
    print(
        f"\nmasked log h MAE: predict-0 {base:.4f}, exact E[log r|z] (log-space optimum) "
        f"{jensen:.4f}, learned: " + ", ".join(f"{k} {v:.4f}" for k, v in errors.items())
    )
    best = min(errors["ratio"], errors["poisson"])
    assert best < 0.3 * base
    assert best < errors["log"]
    assert errors["log"] > 0.5 * jensen  # log space cannot beat its own biased optimum by much


def test_conv_noisy_classifier_recovers_log_h(problem):
    """arch="conv" (local convolutions, summed readout) learns log h of the enumerable pair."""
    from gtlkit.nn import ConvScalarNet

    process = MaskedProcess(V)
    base = zero_baseline(problem, process)
    cfg = small_fit_config(
        arch="conv",
        estimator="noisy_classifier",
        time_conditioning=False,
        noisy_steps=300,
        lr=3e-3,
    )
    b = fit_ratio(problem["source"], problem["target"][:5000], process, cfg)
    assert isinstance(b.log_ratio.net, ConvScalarNet)
    err = weighted_log_h_error(b.log_ratio, problem["p"], problem["q"], process)
    print(f"\nconv noisy classifier: log h MAE {err:.4f} (predict-0 {base:.4f})")
    assert err < 0.4 * base


def test_pairs_noisy_classifier_recovers_the_exact_markov_log_h():
    """arch="pairs" through fit_ratio learns the exact masked-diffusion log h of two Markov
    chains (a family it holds exactly) from noised rows, and its closed-form candidate scores
    reach guidance through the wrapper."""
    from gtlkit.data.markov import MarkovChain, transition_matrix
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio
    from gtlkit.guidance.estimators import closed_form_scores
    from gtlkit.nn import PairScalarNet

    Vm, Lm = 3, 8
    g = torch.Generator().manual_seed(3)
    p = MarkovChain.from_transition(transition_matrix(Vm, "diagonal", diag=0.2))
    q = MarkovChain.from_transition(transition_matrix(Vm, "diagonal", diag=0.7))
    src, tgt = p.sample(4000, Lm, g), q.sample(4000, Lm, g)
    process = MaskedProcess(Vm)
    cfg = small_fit_config(
        arch="pairs",
        estimator="noisy_classifier",
        time_conditioning=False,
        noisy_steps=400,
        lr=3e-2,
    )
    b = fit_ratio(src, tgt, process, cfg)
    assert isinstance(b.log_ratio.net, PairScalarNet)
    z = process.sample(q.sample(2000, Lm, g), torch.rand(2000, generator=g), g)
    exact = ExactLogRatio(q, p)(z)
    learned = b.log_ratio(z, torch.zeros(2000))
    err, base = (learned - exact).abs().mean(), exact.abs().mean()
    print(f"\npairs noisy classifier: log h MAE {err:.4f} (predict-0 {base:.4f})")
    assert err < 0.15 * base
    scores = closed_form_scores(b.log_ratio)
    assert scores is not None and scores(z[:4], None, torch.zeros(4, dtype=torch.long)).shape == (
        4,
        Vm,
    )


def test_ensemble_averages_independent_fits_and_round_trips(problem, tmp_path):
    """RatioConfig(ensemble=3): member 0 is the single fit, the log h is the mean of the
    members', whose error it cannot exceed on average (|.| is convex), the parameter cap holds
    for the whole ensemble, and the bundle round-trips."""
    from gtlkit.nn import EnsembleScalarNet

    process = MaskedProcess(V)
    src, tgt = problem["source"][:3000], problem["target"][:40]  # few target rows: noisy fits
    kw = dict(
        arch="recurrent",
        estimator="noisy_classifier",
        time_conditioning=False,
        noisy_steps=80,
        ema_decay=0.99,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        single = fit_ratio(src, tgt, process, small_fit_config(**kw))
        b = fit_ratio(src, tgt, process, small_fit_config(ensemble=3, **kw), out_dir=tmp_path)
    ens = b.log_ratio.net
    assert isinstance(ens, EnsembleScalarNet) and len(ens.members) == 3
    assert b.metrics["net_params"] == 3 * single.metrics["net_params"]
    assert len(b.metrics["noisy_classifier"]["members"]) == 3
    z = all_sequences(V + 1, L)
    member0 = NoisyClassifierRatio(ens.members[0])
    assert torch.allclose(member0(z, None), single.log_ratio(z, None), atol=1e-5)
    outs = torch.stack([NoisyClassifierRatio(m)(z, None) for m in ens.members])
    assert torch.allclose(b.log_ratio(z, None), outs.mean(0), atol=1e-5)
    assert (outs[1] - outs[0]).abs().max() > 1e-3  # different seeds, different fits
    errs = [
        weighted_log_h_error(NoisyClassifierRatio(m), problem["p"], problem["q"], process)
        for m in ens.members
    ]
    err = weighted_log_h_error(b.log_ratio, problem["p"], problem["q"], process)
    print(f"\nensemble of 3: log h MAE {err:.4f}, members {[round(e, 4) for e in errs]}")
    assert err <= sum(errs) / 3 + 1e-9
    loaded = GuidanceBundle.load(tmp_path / "bundle")
    assert torch.equal(loaded.log_ratio(z, None), b.log_ratio(z, None))
    capped = small_fit_config(ensemble=3, max_param_fraction=0.5, **kw)
    cap = 3 * single.metrics["net_params"] - 1  # one member of the uncapped size is too big
    net_cfg = make_net_config(capped, V, L, False, max_params=cap)
    assert net_cfg.d_model < 32 and 3 * RecurrentScalarNet(net_cfg).num_parameters() <= cap
    with pytest.raises(ValueError, match="noisy_classifier"):
        RatioConfig(ensemble=2, estimator="regression")
    with pytest.raises(ValueError, match="ensemble"):
        RatioConfig(ensemble=0)


def test_recurrent_ratio_net_recovers_log_h_and_round_trips(problem, tmp_path):
    """arch="recurrent" runs through every stage of fit_ratio and learns log h (ratio space)."""
    process = MaskedProcess(V)
    base = zero_baseline(problem, process)
    cfg = small_fit_config(
        arch="recurrent",
        time_conditioning=False,
        classifier_steps=300,
        noisy_steps=100,
        ratio_steps=300,
        cross_fit_folds=1,  # cross-fitting has its own test
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # overlapping domains: no warning
        b = fit_ratio(
            problem["source"],
            problem["target"][:5000],
            process,
            cfg,
            out_dir=tmp_path / "run",
            denoiser=exact_denoiser(problem["p"], process),
        )
    assert b.metrics["stepwise_overlap"]["ok"] and b.metrics["overlap_warning"] is None
    assert isinstance(b.log_ratio.net, RecurrentScalarNet)
    assert isinstance(b.classifier.net, RecurrentScalarNet)
    assert b.metrics["net_params"] == b.log_ratio.net.num_parameters()
    err = weighted_log_h_error(b.log_ratio, problem["p"], problem["q"], process)
    print(f"\nrecurrent ratio net: log h MAE {err:.4f} (predict-0 {base:.4f})")
    assert err < 0.4 * base
    loaded = GuidanceBundle.load(tmp_path / "run" / "bundle")
    Z = all_sequences(V + 1, L)
    t = torch.full((len(Z),), 0.5)
    assert torch.equal(loaded(Z, t), b(Z, t))


def test_ratio_net_uniform_process(problem):
    process = UniformProcess(V)
    base = zero_baseline(problem, process)
    cfg = tiny_config(space="poisson", time_conditioning=True, ratio_steps=400)
    net_cfg = make_net_config(cfg, V, L, time_conditioning=True)
    model, _ = train_ratio_net(problem["source"], process, clean_log_ratio(problem), net_cfg, cfg)
    err = weighted_log_h_error(model, problem["p"], problem["q"], process)
    print(f"\nuniform log h MAE: predict-0 {base:.4f}, poisson-space net {err:.4f}")
    assert err < 0.5 * base


def test_cycle_term_pulls_target_outputs(problem):
    """The cycle term is wired: a reference shifted by +2 raises the net on noised target rows."""
    process = MaskedProcess(V)
    p, q = problem["p"], problem["q"]
    exact = exact_log_ratio(q, p, process)
    outs = {}
    for shift in (0.0, 2.0):
        cfg = tiny_config(space="ratio", cycle_weight=1.0, ratio_steps=150, time_conditioning=False)
        net_cfg = make_net_config(cfg, V, L, time_conditioning=False)
        model, metrics = train_ratio_net(
            problem["source"],
            process,
            clean_log_ratio(problem),
            net_cfg,
            cfg,
            target=problem["target"],
            noisy_log_ratio=lambda z, t, s=shift: exact(z, t) + s,
        )
        assert metrics["cycle"]
        x = problem["target"][:2000]
        z = process.sample(x, torch.full((2000,), 0.5), torch.Generator().manual_seed(1))
        outs[shift] = float(model(z, torch.full((2000,), 0.5)).mean())
    assert outs[2.0] > outs[0.0] + 0.3, outs


# --------------------------------------------------------------------------------------------
# Stage 3: the noisy classifier is an estimator of log h_t by itself
# --------------------------------------------------------------------------------------------


def test_noisy_classifier_recovers_log_h(problem):
    process = MaskedProcess(V)
    cfg = tiny_config(noisy_steps=400)
    net_cfg = make_net_config(cfg, V, L, time_conditioning=True)
    model, metrics = train_noisy_classifier(
        problem["source"], problem["target"], process, net_cfg, cfg
    )
    assert isinstance(model, NoisyClassifierRatio) and model.prior_log_odds == 0.0
    assert 0.5 < metrics["auroc_t0.25"] <= 1.0
    p, q = problem["p"], problem["q"]
    for t in (0.25, 0.5, 0.75):
        base = weighted_log_h_error(lambda z, tt: torch.zeros(len(z)), p, q, process, (t,))
        err = weighted_log_h_error(model, p, q, process, (t,))
        print(f"\nnoisy classifier t={t}: log h MAE {err:.4f} (predict-0 {base:.4f})")
        assert err < 0.5 * base


# --------------------------------------------------------------------------------------------
# fit_ratio: end to end, determinism, budget, save/load
# --------------------------------------------------------------------------------------------


def small_fit_config(**kw) -> RatioConfig:
    return tiny_config(
        **({"classifier_steps": 60, "noisy_steps": 60, "ratio_steps": 60, "cycle_weight": 0.1} | kw)
    )


def test_fit_ratio_end_to_end_determinism_and_round_trip(problem, tmp_path):
    process = MaskedProcess(V)
    src, tgt = problem["source"][:3000], problem["target"][:300]
    cfg = small_fit_config()
    before = cfg.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b1 = fit_ratio(src, tgt, process, cfg, out_dir=tmp_path / "run")
        b2 = fit_ratio(src, tgt, process, cfg)
    assert cfg.to_dict() == before  # the caller's config is never mutated
    assert b1.estimator == "regression" and isinstance(b1.log_ratio, RatioNetwork)
    assert isinstance(b1.noisy_classifier, NoisyClassifierRatio)
    m = b1.metrics["classifier"]
    assert m["on"] == "held_out" and m["n_source"] == 300 and m["n_target"] == 30
    for key in ("accuracy", "auroc", "ece", "ece_positive", "balanced_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    assert "ess_fraction" in m["overlap"] and b1.metrics["overlap"]["t"] == 0.5
    # the calibration report describes the final log h (the ratio net), not the cycle term's
    # noisy classifier
    assert (
        b1.metrics["calibration"]["t0.5"] != b1.metrics["noisy_classifier"]["calibration"]["t0.5"]
    )
    Z = all_sequences(V + 1, L)
    t = torch.rand(len(Z), generator=torch.Generator().manual_seed(3))
    out = b1(Z, t)
    assert out.shape == (len(Z),)
    assert torch.equal(out, b2(Z, t))  # same seed, same weights

    # files: resolved config, stage histories, the bundle; and the round trip
    resolved = json.loads((tmp_path / "run" / "ratio_config.json").read_text())
    assert resolved["ratio_config"] == before and resolved["net_config"]["d_model"] == 32
    assert (tmp_path / "run" / "runs" / "ratio" / "history.jsonl").is_file()
    loaded = GuidanceBundle.load(tmp_path / "run" / "bundle")
    assert torch.equal(loaded(Z, t), out)
    assert loaded.estimator == "regression" and loaded.log_ratio.space == "ratio"
    assert loaded.log_ratio.log_norm == b1.log_ratio.log_norm
    assert loaded.classifier.prior_log_odds == b1.classifier.prior_log_odds
    x0 = problem["source"][:64]
    assert torch.equal(loaded.classifier.log_ratio_clean(x0), b1.classifier.log_ratio_clean(x0))
    assert torch.equal(loaded.noisy_classifier(Z, t), b1.noisy_classifier(Z, t))
    assert loaded.process == process.config() and loaded.config == b1.config
    assert loaded.metrics["classifier"]["auroc"] == pytest.approx(m["auroc"])


def test_fit_ratio_noisy_classifier_estimator_round_trip(problem, tmp_path):
    process = UniformProcess(V)
    cfg = small_fit_config(estimator="noisy_classifier", cycle_weight=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = fit_ratio(problem["source"][:1000], problem["target"][:200], process, cfg)
    assert b.estimator == "noisy_classifier" and b.log_ratio is b.noisy_classifier
    assert "ratio" not in b.metrics
    b.save(tmp_path / "b")
    loaded = GuidanceBundle.load(tmp_path / "b")
    Z = all_sequences(V, L)
    t = torch.full((len(Z),), 0.3)
    assert loaded.estimator == "noisy_classifier"
    assert torch.equal(loaded(Z, t), b(Z, t))
    # only the stage the estimator uses was trained: no clean classifier
    assert b.classifier is None and "classifier" not in b.metrics
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bundle.json", "noisy_classifier"]


def test_bundle_load_errors(tmp_path):
    with pytest.raises(LoadError, match=r"bundle\.json"):
        GuidanceBundle.load(tmp_path)
    (tmp_path / "bundle.json").write_text('{"format": "gtlkit-guidance", "version": 99}')
    with pytest.raises(LoadError, match="version"):
        GuidanceBundle.load(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(LoadError, match="JSON"):
        GuidanceBundle.load(tmp_path)
    # a plain net without wrapper metadata is not a guidance component
    net = ScalarNet(
        TransformerConfig(vocab_size=V, seq_len=L, d_model=16, n_layers=1, n_heads=2, cond_dim=16)
    )
    net.save_pretrained(tmp_path / "plain")
    with pytest.raises(LoadError, match="wrapper"):
        load_wrapper(tmp_path / "plain")


def test_parameter_budget_and_input_validation(problem):
    cfg = RatioConfig(arch="transformer", d_model=128, n_layers=2, n_heads=4)
    big = make_net_config(cfg, V, L, True)
    small = make_net_config(cfg, V, L, True, max_params=20_000)
    assert ScalarNet(small).num_parameters() <= 20_000 < ScalarNet(big).num_parameters()
    with pytest.raises(ValueError, match="fits"):
        make_net_config(cfg, V, L, True, max_params=100)
    rcfg = RatioConfig(arch="recurrent", d_model=128, n_layers=2, n_heads=4)
    rsmall = make_net_config(rcfg, V, L, False, max_params=20_000)
    assert RecurrentScalarNet(rsmall).num_parameters() <= 20_000
    process = MaskedProcess(V)
    with pytest.raises(ValueError, match="clean ids"):
        fit_ratio(torch.full((10, L), V), problem["target"][:10], process, small_fit_config())
    with pytest.raises(ValueError, match="lengths differ"):
        fit_ratio(problem["source"][:10], problem["target"][:10, :3], process, small_fit_config())
    for bad in (
        {"space": "kl"},
        {"estimator": "x"},
        {"balance": "y"},
        {"val_fraction": 1.0},
        {"arch": "lstm"},
    ):
        with pytest.raises(ValueError):
            RatioConfig(**bad)
    assert RatioConfig.from_dict(cfg.to_dict()) == cfg


def test_poor_overlap_is_reported():
    """Disjoint domains (x_0 = 0 vs x_0 != 0): the overlap verdict fails and fit_ratio warns."""
    X = all_sequences(V, L)
    p = EnumeratedDistribution((X[:, 0] == 0).double(), V, L)
    q = EnumeratedDistribution((X[:, 0] != 0).double(), V, L)
    g = torch.Generator().manual_seed(0)
    src, tgt = p.sample(2000, g), q.sample(200, g)
    process = MaskedProcess(V)
    exact = noisy_overlap(exact_log_ratio(q, p, process), process, src, tgt, t=0.5)
    assert not exact["ok"] and exact["ess_fraction_from_target"] < 0.01
    cfg = small_fit_config(estimator="noisy_classifier", cycle_weight=0.0, noisy_steps=200)
    with pytest.warns(RuntimeWarning, match="barely overlap"):
        b = fit_ratio(src, tgt, process, cfg)
    assert b.metrics["overlap_warning"] and not b.metrics["overlap"]["ok"]
    assert b.metrics["calibration"]["t0.25"]["auroc"] > 0.9
    # with the source denoiser the per-step reading decides: the target needs tokens at
    # position 0 that the source never proposes
    with pytest.warns(RuntimeWarning, match="per reveal step"):
        b = fit_ratio(src, tgt, process, cfg, denoiser=exact_denoiser(p, process))
    step = b.metrics["stepwise_overlap"]
    assert not step["ok"] and step["unreachable_mass"] > 0.1


# --------------------------------------------------------------------------------------------
# fit_ratio's API: validation rows, held-out criterion, stages, the noisy-classifier recipe
# --------------------------------------------------------------------------------------------


def recipe_config(**kw) -> RatioConfig:
    """The noisy-classifier recipe of docs/markov.md (GRU width 32, balanced BCE, EMA 0.99)."""
    base = dict(
        arch="recurrent",
        estimator="noisy_classifier",
        d_model=32,
        n_layers=1,
        time_conditioning=False,
        max_param_fraction=None,
        noisy_steps=1500,
        batch_size=256,
        lr=3e-3,
        ema_decay=0.99,
        warmup_steps=50,
        progress=False,
    )
    return RatioConfig(**(base | kw))


def reference_recipe(source, target, process, steps, batch, lr, seed):
    """The recipe written out directly on the loop (what the Markov experiment's own trainer
    did): balanced BCE on ``batch`` source + ``batch`` target rows per step, each noised at
    its own t ~ U(0, 1), EMA 0.99, warmup min(50, steps // 10)."""
    from gtlkit.losses import bce_loss
    from gtlkit.training import TrainConfig, train

    torch.manual_seed(seed)
    net = RecurrentScalarNet(
        TransformerConfig(
            vocab_size=process.vocab_size,
            seq_len=source.shape[1],
            d_model=32,
            n_layers=1,
            n_heads=1,
            time_conditioning=False,
            cond_dim=32,
        )
    )

    def loss_fn(model, xs, g):
        B = xs.shape[0]
        xt = target[torch.randint(0, len(target), (B,), generator=g)]
        x0 = torch.cat([xs, xt])
        t = torch.rand(2 * B, generator=g)
        logits = model(process.sample(x0, t, generator=g), t)
        return bce_loss(logits, torch.cat([torch.zeros(B), torch.ones(B)]))

    tcfg = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=min(50, steps // 10),
        ema_decay=0.99,
        mixed_precision="no",
        seed=seed,
        progress=False,
    )
    return train(net, loss_fn, source, tcfg).model


def test_fit_ratio_reproduces_the_noisy_classifier_recipe(problem):
    """With the recipe's settings fit_ratio trains exactly the recipe's weights, and all given
    rows train (validation rows are only evaluated)."""
    process = MaskedProcess(V)
    src, tgt = problem["source"][:600], problem["target"][:80]
    vs, vt = problem["source"][-300:], problem["target"][-300:]
    cfg = recipe_config(noisy_steps=40, batch_size=64, seed=7, mixed_precision="no")
    b = fit_ratio(src, tgt, process, cfg, val_source=vs, val_target=vt)
    ref = reference_recipe(src, tgt, process, steps=40, batch=64, lr=3e-3, seed=7)
    got = b.log_ratio.net.state_dict()
    assert got.keys() == ref.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    assert b.config["n_source"] == 600 and b.config["n_target"] == 80  # no internal split
    h = b.metrics["heldout"]
    assert h["on"] == "held_out" and (h["n_source"], h["n_target"]) == (300, 300)
    assert h["log_loss"] == pytest.approx(
        noisy_log_loss(ref_wrapper(ref), process, vs, vt, repeats=cfg.heldout_repeats)
    )
    assert b.metrics["calibration"]["on"] == "held_out"
    assert b.metrics["calibration"]["t0.5"]["auroc"] > 0.5
    assert b.metrics["overlap"]["on"] == "held_out"


def ref_wrapper(net):
    return NoisyClassifierRatio(net.eval(), prior_log_odds=0.0)


def test_fit_ratio_validation_rows_stages_and_errors(problem):
    process = MaskedProcess(V)
    src, tgt = problem["source"][:500], problem["target"][:100]
    # regression without the cycle term trains no noisy classifier
    cfg = small_fit_config(cycle_weight=0.0, classifier_steps=20, ratio_steps=20)
    b = fit_ratio(src, tgt, process, cfg)
    assert b.noisy_classifier is None and "noisy_classifier" not in b.metrics
    assert b.classifier is not None and isinstance(b.log_ratio, RatioNetwork)
    h = b.metrics["heldout"]
    assert h["on"] == "held_out" and h["n_target"] == 10 and b.config["n_target"] == 90
    assert 0.0 < h["log_loss"] < 2.0
    # val_fraction = 0 and no validation rows: metrics on the training rows, and they say so
    b = fit_ratio(src, tgt, process, cfg.replace(val_fraction=0.0))
    assert b.metrics["heldout"]["on"] == "train" and b.metrics["heldout"]["n_source"] == 500
    assert b.metrics["classifier"]["on"] == "train"
    with pytest.raises(ValueError, match="both"):
        fit_ratio(src, tgt, process, cfg, val_source=src[:10])
    with pytest.raises(ValueError, match="length"):
        fit_ratio(src, tgt, process, cfg, val_source=src[:10], val_target=tgt[:5, :2])


def test_noisy_classifier_early_stopping_keeps_its_best_weights(problem):
    """16 target rows at a high learning rate overfit; the held-out log-loss stops the run and
    the bundle holds the weights of its best validation."""
    from gtlkit.training.ratio_stages import _EARLY_STOP_SEED

    process = MaskedProcess(V)
    src, tgt = problem["source"][:2000], problem["target"][:16]
    vs, vt = problem["source"][5000:5300], problem["target"][5000:5300]
    cfg = small_fit_config(
        estimator="noisy_classifier",
        cycle_weight=0.0,
        noisy_steps=600,
        lr=1e-2,
        patience_steps=100,
        eval_every=20,
        eval_max_rows=200,
    )
    b = fit_ratio(src, tgt, process, cfg, val_source=vs, val_target=vt)
    es = b.metrics["noisy_classifier"]["early_stopping"]
    print(f"\nearly stopping: {es}")
    assert es["n_eval_source"] == 200 and es["n_eval_target"] == 200
    assert es["stopped_early"] and es["steps_run"] < 600
    assert es["best_step"] % 20 == 0 and es["steps_run"] - es["best_step"] >= 100
    again = noisy_log_loss(
        b.log_ratio, process, vs[:200], vt[:200], repeats=cfg.heldout_repeats, seed=_EARLY_STOP_SEED
    )
    assert again == pytest.approx(es["best_log_loss"], rel=1e-6)
    assert again < math.log(2)  # it learned something before it overfitted
    # without patience_steps nothing is validated or recorded
    full = fit_ratio(src, tgt, process, cfg.replace(patience_steps=None, noisy_steps=40))
    assert "early_stopping" not in full.metrics["noisy_classifier"]
    # early stopping needs held-out rows
    with pytest.raises(ValueError, match="patience_steps"):
        fit_ratio(src, tgt, process, cfg.replace(val_fraction=0.0))
    with pytest.raises(ValueError, match="patience_steps"):
        RatioConfig(patience_steps=-1)


# --------------------------------------------------------------------------------------------
# gtlkit.training.ratio_config (time input, defaults) and gtlkit.training.ratio_crossfit
# --------------------------------------------------------------------------------------------


def test_uniform_noise_needs_time_conditioning(problem):
    """Under uniform noise h_t depends on t: a net without time input is refused, and the
    default (time_conditioning=None) turns it on there and off for masked diffusion."""
    src, tgt = problem["source"][:300], problem["target"][:60]
    cfg = small_fit_config(estimator="noisy_classifier", cycle_weight=0.0, noisy_steps=2)
    with pytest.raises(ValueError, match="time_conditioning=True"):
        fit_ratio(src, tgt, UniformProcess(V), cfg.replace(time_conditioning=False))
    untimed = make_net_config(cfg, V, L, time_conditioning=False)
    with pytest.raises(ValueError, match="time_conditioning=True"):
        train_noisy_classifier(src, tgt, UniformProcess(V), untimed, cfg)
    with pytest.raises(ValueError, match="time_conditioning=True"):
        train_ratio_net(src, UniformProcess(V), clean_log_ratio(problem), untimed, cfg)
    assert cfg.time_conditioning is None
    b = fit_ratio(src, tgt, UniformProcess(V), cfg)
    assert b.log_ratio.net.config.time_conditioning
    b = fit_ratio(src, tgt, MaskedProcess(V), cfg)
    assert not b.log_ratio.net.config.time_conditioning


def test_regression_targets_are_cross_fitted(monkeypatch):
    """No source row's regression target comes from a classifier that trained on that row.

    A stand-in classifier returns 1 on the rows it was trained on and 0 elsewhere; the ratio
    network's targets must then all be 0 (with cross_fit_folds=1 they are all 1: in-sample).
    """
    import gtlkit.training.ratio as ratio_mod
    import gtlkit.training.ratio_crossfit as crossfit

    class Remembers:
        def __init__(self, rows):
            self.rows = {tuple(r) for r in rows.tolist()}
            self.prior_log_odds = 0.0

        def log_ratio_clean(self, x):
            return torch.tensor([float(tuple(r) in self.rows) for r in x.tolist()])

    def fake_classifier(source, target, net_config, cfg, val=None, out_dir=None, stage="c"):
        return Remembers(source), {
            "auroc": 0.5,
            "accuracy": 0.5,
            "balanced_accuracy": 0.5,
            "ece": 0.0,
            "ece_positive": 0.0,
        }

    seen = {}

    def spy(source, process, clean_log_ratio, *args, source_log_ratio=None, **kw):
        labels = source_log_ratio if source_log_ratio is not None else clean_log_ratio(source)
        seen["labels"] = torch.as_tensor(labels)
        seen["n"] = len(source)
        return real(source, process, clean_log_ratio, *args, source_log_ratio=labels, **kw)

    real = ratio_mod.train_ratio_net
    monkeypatch.setattr(crossfit, "train_domain_classifier", fake_classifier)
    monkeypatch.setattr(ratio_mod, "train_domain_classifier", fake_classifier, raising=False)
    monkeypatch.setattr(ratio_mod, "train_ratio_net", spy)
    src = all_sequences(V, L)  # 81 distinct rows: a row's identity is its content
    tgt = src[:20]
    cfg = small_fit_config(cycle_weight=0.0, ratio_steps=2)
    for folds, expected in ((2, 0.0), (3, 0.0), (1, 1.0)):
        b = fit_ratio(
            src,
            tgt,
            MaskedProcess(V),
            cfg.replace(cross_fit_folds=folds),
            val_source=src[:10],
            val_target=tgt[:10],
        )
        assert seen["n"] == 81 and torch.all(seen["labels"] == expected), (folds, seen)
        assert b.metrics["classifier"]["cross_fit"]["folds"] == folds
    with pytest.raises(ValueError, match="cross_fit_folds"):
        RatioConfig(cross_fit_folds=0)


def test_defaults_are_the_measured_recipe(problem):
    """RatioConfig() is the recipe of docs/ratio.md: a recurrent noisy-data classifier, one
    stage, no time input under masked diffusion, sized to fit a 60k-parameter denoiser."""
    cfg = RatioConfig()
    assert (cfg.arch, cfg.estimator, cfg.d_model, cfg.n_layers) == (
        "recurrent",
        "noisy_classifier",
        32,
        1,
    )
    assert (cfg.noisy_steps, cfg.batch_size, cfg.lr, cfg.ema_decay) == (1500, 256, 3e-3, 0.99)
    b = fit_ratio(
        problem["source"][:500],
        problem["target"][:100],
        MaskedProcess(V),
        cfg.replace(noisy_steps=3, progress=False),
        denoiser_params=60_000,
    )
    assert isinstance(b.log_ratio.net, RecurrentScalarNet) and b.classifier is None
    assert not b.log_ratio.net.config.time_conditioning
    assert b.log_ratio.net.config.d_model == 32  # not shrunk: fits 25 % of 60k parameters


def test_fit_ratio_warns_when_held_out_rows_show_no_signal(problem):
    """Held-out target rows drawn from the source: whatever the network learned from the
    training rows cannot beat log 2 on them, and fit_ratio says so; held-out rows from the
    target keep the warning off."""
    process = MaskedProcess(V)
    src, tgt = problem["source"], problem["target"]
    cfg = small_fit_config(estimator="noisy_classifier", cycle_weight=0.0, noisy_steps=150)
    kw = {"val_source": src[3000:3600]}
    with pytest.warns(RuntimeWarning, match="no better than knowing nothing"):
        bad = fit_ratio(src[:3000], tgt[:600], process, cfg, val_target=src[5000:5600], **kw)
    assert bad.metrics["heldout"]["log_loss"] >= math.log(2)
    assert "log-loss" in bad.metrics["fit_warning"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overlap verdict may warn
        good = fit_ratio(src[:3000], tgt[:600], process, cfg, val_target=tgt[600:1200], **kw)
    assert good.metrics["heldout"]["log_loss"] < math.log(2)
    assert good.metrics["fit_warning"] is None


UNIGRAM_P = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
UNIGRAM_Q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
"""Two domains with independent tokens: their exact log h is a sum of per-token terms."""


def test_bag_body_recovers_the_exact_log_h_of_two_unigram_sources():
    """Tokens drawn independently from a unigram law in each domain: the marginal ratio of any
    revealed set is a product, so log h(z) = sum over revealed l of log q_u(z_l) / p_u(z_l)
    exactly, and the bag body trained as a noisy classifier must find those weights."""
    g = torch.Generator().manual_seed(3)
    p_u, q_u = UNIGRAM_P, UNIGRAM_Q
    p, q = EnumeratedDistribution.iid(p_u, L), EnumeratedDistribution.iid(q_u, L)
    process = MaskedProcess(V)
    cfg = tiny_config(arch="bag", estimator="noisy_classifier", noisy_steps=400, lr=3e-2)
    b = fit_ratio(p.sample(20000, g), q.sample(20000, g), process, cfg)
    w = b.log_ratio.net.weight.detach().double()
    learned = w[:V] - w[V]  # a revealed token against [MASK]: its log q_u / p_u
    print(f"\nbag weights {learned.tolist()} vs {(q_u / p_u).log().tolist()}")
    torch.testing.assert_close(learned, (q_u / p_u).log(), atol=0.08, rtol=0)
    err = weighted_log_h_error(b, p, q, process)
    base = weighted_log_h_error(lambda z, t: torch.zeros(len(z)), p, q, process)
    assert err < 0.1 * base


def test_unigram_estimator_recovers_the_exact_log_h_and_round_trips(tmp_path):
    """The closed-form unigram estimator on two unigram sources: its weights approach
    log q_u / p_u, its log h the exact one, and the bundle saves and loads as "unigram"."""
    g = torch.Generator().manual_seed(4)
    p_u, q_u = UNIGRAM_P, UNIGRAM_Q
    p, q = EnumeratedDistribution.iid(p_u, L), EnumeratedDistribution.iid(q_u, L)
    process = MaskedProcess(V)
    cfg = RatioConfig(estimator="unigram", progress=False)
    b = fit_ratio(p.sample(20000, g), q.sample(2000, g), process, cfg, out_dir=tmp_path / "run")
    m = b.metrics["unigram"]
    w = b.log_ratio.net.weight.detach().double()
    assert w[V] == 0 and b.metrics["net_params"] == V + 1
    # independent tokens: the raw ratio is calibrated, so the scale stays near 1
    assert 0.85 < m["scale"] < 1.15, m
    torch.testing.assert_close(w[:V], (q_u / p_u).log(), atol=0.1, rtol=0)
    err = weighted_log_h_error(b, p, q, process)
    assert err < 0.1 * weighted_log_h_error(lambda z, t: torch.zeros(len(z)), p, q, process)
    assert b.estimator == "unigram" and b.classifier is None and b.noisy_classifier is None
    loaded = GuidanceBundle.load(tmp_path / "run" / "bundle")
    Z = all_sequences(V + 1, L)
    assert loaded.estimator == "unigram"
    assert torch.equal(loaded(Z, torch.zeros(len(Z))), b(Z, torch.zeros(len(Z))))


def test_unigram_estimator_shrinks_toward_the_source_with_few_target_rows():
    """Equal domains: the ratio carries no signal, so cross-validation picks a strong prior
    toward the source and the fitted log h stays near 0; unequal domains with many rows: it
    follows the counts (a smaller prior)."""
    g = torch.Generator().manual_seed(5)
    p = EnumeratedDistribution.iid(UNIGRAM_P, L)
    cfg = RatioConfig(estimator="unigram", progress=False, val_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no signal: fit_ratio says so
        same = fit_ratio(p.sample(5000, g), p.sample(40, g), MaskedProcess(V), cfg)
    assert same.log_ratio.net.weight.abs().max() < 0.1
    q = EnumeratedDistribution.iid(UNIGRAM_Q, L)
    differ = fit_ratio(p.sample(5000, g), q.sample(4000, g), MaskedProcess(V), cfg)
    assert differ.metrics["unigram"]["beta"] < same.metrics["unigram"]["beta"]
    with pytest.raises(ValueError, match="masked diffusion"):
        fit_ratio(p.sample(100, g), q.sample(100, g), UniformProcess(V), cfg)
