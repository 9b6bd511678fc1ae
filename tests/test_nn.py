"""Tests of gtlkit.nn: shapes, SUBS, soft one-hot inputs, time conditioning, sizes."""

from __future__ import annotations

import pytest
import torch

from gtlkit.nn import (
    SUBS_NEG,
    DenoiserNet,
    PositionNet,
    RecurrentScalarNet,
    ScalarNet,
    TokenNet,
    TransformerConfig,
    build_scalar_net,
)

V, L, B = 5, 8, 3


def tiny(**kw) -> TransformerConfig:
    base = dict(vocab_size=V, seq_len=L, d_model=32, n_layers=2, n_heads=4, cond_dim=16)
    base.update(kw)
    return TransformerConfig(**base)


def perturb_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Add noise to every parameter (opens the zero-initialised AdaLN gates)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


def rand_ids(seed: int = 0, b: int = B, length: int = L) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V + 1, (b, length), generator=g)


@pytest.mark.parametrize(
    ("cls", "shape"),
    [(DenoiserNet, (B, L, V)), (TokenNet, (B, L, V)), (PositionNet, (B, L)), (ScalarNet, (B,))],
)
def test_output_shapes_and_dtype(cls, shape):
    torch.manual_seed(0)
    m = cls(tiny())
    out = m(rand_ids(), torch.rand(B))
    assert out.shape == shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # shorter sequences than seq_len work, longer ones are rejected
    assert m(rand_ids(length=L - 3), 0.5).shape[0] == B
    with pytest.raises(ValueError, match="seq_len"):
        m(rand_ids(length=L + 1), 0.5)


def test_mask_has_its_own_embedding_row():
    m = DenoiserNet(tiny())
    assert m.backbone.tok_emb.weight.shape == (V + 1, 32)
    # the [MASK] row is a real, distinct row: changing it changes outputs at masked inputs only
    perturb_(m)
    x = torch.full((1, L), V)
    before = m(x, 0.5).clone()
    with torch.no_grad():
        m.backbone.tok_emb.weight[V].add_(1.0)
    assert not torch.allclose(before, m(x, 0.5))


def test_config_round_trip_and_validation():
    c = tiny(time_conditioning=False, dropout=0.1)
    assert TransformerConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown"):
        TransformerConfig.from_dict({**c.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=V, seq_len=L, d_model=30, n_heads=4)


def test_subs_carries_over_revealed_tokens():
    torch.manual_seed(0)
    m = DenoiserNet(tiny())
    perturb_(m)
    x = rand_ids(1)
    x[0, 0], x[0, 1] = V, 2  # one masked, one revealed position at least
    out = m(x, torch.rand(B))
    revealed = x != V
    ids = x.clamp(max=V - 1)
    at_token = out.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert (at_token[revealed] == 0).all()
    is_token = torch.nn.functional.one_hot(ids, V).bool()  # [B, L, V]
    off_token = out[revealed.unsqueeze(-1) & ~is_token]
    assert off_token.numel() == revealed.sum() * (V - 1)
    assert (off_token == SUBS_NEG).all()
    # masked positions get genuine (finite, not all equal) logits
    assert (out[~revealed] > SUBS_NEG / 2).all()
    assert out[~revealed].std() > 0
    # without SUBS the same weights give ordinary logits everywhere
    m2 = DenoiserNet(tiny(), subs=False)
    m2.load_state_dict(m.state_dict())
    out2 = m2(x, torch.rand(B))
    assert (out2 > SUBS_NEG / 2).all()


@pytest.mark.parametrize("cls", [DenoiserNet, TokenNet, PositionNet, ScalarNet])
def test_soft_one_hot_path_matches_id_path(cls):
    torch.manual_seed(0)
    m = cls(tiny())
    perturb_(m)
    x = rand_ids(2)
    t = torch.rand(B)
    onehot = torch.nn.functional.one_hot(x, V + 1).float()
    assert torch.equal(m(onehot, t), m(x, t))


def test_gradient_flows_to_one_hot_inputs():
    torch.manual_seed(0)
    m = ScalarNet(tiny())
    perturb_(m)
    onehot = torch.nn.functional.one_hot(rand_ids(3), V + 1).float().requires_grad_(True)
    m(onehot, 0.3).sum().backward()
    assert onehot.grad is not None and onehot.grad.shape == (B, L, V + 1)
    assert onehot.grad.abs().sum() > 0


def test_scalar_time_broadcast_and_bad_t():
    torch.manual_seed(0)
    m = ScalarNet(tiny())
    perturb_(m)
    x = rand_ids(4)
    full = m(x, torch.full((B,), 0.25))
    torch.testing.assert_close(m(x, 0.25), full)
    torch.testing.assert_close(m(x, torch.tensor(0.25)), full)
    with pytest.raises(ValueError, match="t must be"):
        m(x, torch.rand(B + 1))
    with pytest.raises(ValueError, match="pass t"):
        m(x)


def test_time_conditioning_false_ignores_t():
    torch.manual_seed(0)
    for cls in (DenoiserNet, ScalarNet):
        m = cls(tiny(time_conditioning=False))
        perturb_(m)
        x = rand_ids(5)
        a = m(x, torch.zeros(B))
        b = m(x, torch.rand(B))
        assert torch.equal(a, b)
        assert torch.equal(a, m(x))  # t may be omitted
        assert not any("time_emb" in n or "adaln" in n for n, _ in m.named_parameters())


def test_time_conditioning_true_uses_t():
    torch.manual_seed(0)
    for cls in (DenoiserNet, ScalarNet, PositionNet, TokenNet):
        m = cls(tiny(time_conditioning=True))
        x = torch.full((B, L), V)  # all masked so SUBS does not hide anything
        # fresh net: AdaLN gates are zero-initialised, so t has no effect yet ...
        assert torch.equal(m(x, torch.zeros(B)), m(x, torch.ones(B)))
        # ... but the gates are trainable and, once non-zero, t changes the output
        perturb_(m)
        a, b = m(x, torch.full((B,), 0.1)), m(x, torch.full((B,), 0.9))
        assert (a - b).abs().max() > 1e-3, cls.__name__


def test_zero_init_gates_receive_gradient():
    """The zero-initialised modulation must still learn (a dead time path is a silent defect)."""
    torch.manual_seed(0)
    m = DenoiserNet(tiny())
    x = torch.full((B, L), V)
    m(x, torch.rand(B)).logsumexp(-1).sum().backward()
    grads = [blk.adaln.weight.grad for blk in m.backbone.blocks]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_dropout_active_only_in_train_mode():
    torch.manual_seed(0)
    m = TokenNet(tiny(dropout=0.5))
    perturb_(m)
    x, t = rand_ids(6), torch.rand(B)
    m.eval()
    assert torch.equal(m(x, t), m(x, t))
    m.train()
    assert not torch.equal(m(x, t), m(x, t))


def test_tiny_parameter_count():
    m = DenoiserNet(
        TransformerConfig(vocab_size=4, seq_len=16, d_model=32, n_layers=2, n_heads=4, cond_dim=32)
    )
    n = m.num_parameters()
    assert 40_000 < n < 60_000
    assert n == sum(p.numel() for p in m.parameters())


def expected_params(V_: int, L_: int, d: int, n: int, cond: int, mlp: float = 4.0) -> int:
    """Closed-form parameter count of a time-conditioned DenoiserNet."""
    h = round(mlp * d)
    block = (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + (cond * 6 * d + 6 * d)
    time = (256 * cond + cond) + (cond * cond + cond)
    return (V_ + 1) * d + L_ * d + time + n * block + (cond * 2 * d + 2 * d) + (d * V_ + V_)


def test_parameter_count_formula_small():
    c = tiny()
    assert DenoiserNet(c).num_parameters() == expected_params(V, L, 32, 2, 16)


def test_bert_base_sized_denoiser():
    """A ~100M-parameter configuration builds and runs one tiny forward pass."""
    c = TransformerConfig(
        vocab_size=30522, seq_len=128, d_model=768, n_layers=12, n_heads=12, cond_dim=128
    )
    m = DenoiserNet(c)
    n = m.num_parameters()
    assert n == expected_params(30522, 128, 768, 12, 128)
    assert 100e6 < n < 140e6
    with torch.no_grad():
        out = m(torch.full((1, 4), 30522), torch.tensor([0.5]))
    assert out.shape == (1, 4, 30522) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# Recurrent scalar net (arch="recurrent")
# --------------------------------------------------------------------------------------------


def _rnn_config(**kw) -> TransformerConfig:
    base = dict(
        vocab_size=4,
        seq_len=6,
        d_model=8,
        n_layers=1,
        n_heads=1,
        time_conditioning=False,
        cond_dim=8,
    )
    return TransformerConfig(**{**base, **kw})


def test_recurrent_net_ids_and_onehot_agree_and_round_trip(tmp_path):
    from gtlkit.guidance.models import NoisyClassifierRatio, load_wrapper

    torch.manual_seed(0)
    net = RecurrentScalarNet(_rnn_config()).eval()
    x = torch.randint(0, 5, (7, 6))
    out = net(x, None)
    assert out.shape == (7,) and out.dtype == torch.float32
    onehot = torch.nn.functional.one_hot(x, 5).float()
    assert torch.allclose(net(onehot, None), out, atol=1e-5)
    wrapper = NoisyClassifierRatio(net)
    wrapper.save_pretrained(tmp_path / "clf")
    loaded = load_wrapper(tmp_path / "clf")
    assert isinstance(loaded.net, RecurrentScalarNet)
    assert torch.equal(loaded(x, torch.zeros(7)), wrapper(x, torch.zeros(7)))


def test_recurrent_net_is_additive_over_positions():
    """The readout is a sum of per-position terms: a longer input adds terms, never averages."""
    torch.manual_seed(0)
    net = RecurrentScalarNet(_rnn_config()).eval()
    x = torch.randint(0, 5, (3, 6))
    h = net.features(x)
    assert h.shape == (3, 6, 16)
    per_pos = net.head(h).squeeze(-1)
    assert torch.allclose(per_pos.sum(1), net(x), atol=1e-6)


def test_recurrent_net_time_conditioning():
    """Untimed: t is ignored. Timed: t=None is refused, and t changes the output once trained."""
    x = torch.randint(0, 5, (4, 6))
    untimed = RecurrentScalarNet(_rnn_config()).eval()
    assert torch.equal(untimed(x, torch.zeros(4)), untimed(x, torch.ones(4)))
    timed = RecurrentScalarNet(_rnn_config(time_conditioning=True)).eval()
    with pytest.raises(ValueError, match="time"):
        timed(x, None)
    # the time projection starts at zero: an untrained timed net ignores t
    assert torch.equal(timed(x, torch.zeros(4)), timed(x, torch.ones(4)))
    perturb_(timed)
    assert not torch.allclose(timed(x, torch.zeros(4)), timed(x, torch.ones(4)))


def test_recurrent_net_rejects_bad_shapes_and_unknown_arch():
    net = RecurrentScalarNet(_rnn_config())
    with pytest.raises(ValueError, match="one-hot"):
        net(torch.zeros(2, 6, 3))
    with pytest.raises(ValueError, match="seq_len"):
        net(torch.zeros(2, 9, dtype=torch.long))
    assert type(build_scalar_net(_rnn_config(), "transformer")) is ScalarNet
    assert type(build_scalar_net(_rnn_config(), "recurrent")) is RecurrentScalarNet
    with pytest.raises(ValueError, match="arch"):
        build_scalar_net(_rnn_config(), "lstm")


# ---- the convolutional body (arch="conv") ---------------------------------------------------


def test_conv_net_is_local_additive_and_round_trips(tmp_path):
    """Ids and one-hot rows agree; the output is a sum of position terms; a change at one
    position moves only the terms within the receptive field; save/load keeps the outputs."""
    from gtlkit.guidance.models import NoisyClassifierRatio, load_wrapper
    from gtlkit.nn import ConvScalarNet

    cfg = _rnn_config(seq_len=12, n_layers=1, conv_kernel=3)
    torch.manual_seed(0)
    net = build_scalar_net(cfg, "conv").eval()
    assert type(net) is ConvScalarNet
    x = torch.randint(0, 5, (4, 12))
    out = net(x, None)
    assert out.shape == (4,) and out.dtype == torch.float32
    onehot = torch.nn.functional.one_hot(x, 5).float()
    assert torch.allclose(net(onehot, None), out, atol=1e-5)
    terms = net.head(net.features(x)).squeeze(-1)  # [B, L]
    assert torch.allclose(terms.sum(1), out, atol=1e-5)
    y = x.clone()
    y[:, 6] = (x[:, 6] + 1) % 5
    moved = (net.head(net.features(y)).squeeze(-1) - terms).abs() > 1e-6
    assert moved[:, 5:8].any() and not moved[:, :5].any() and not moved[:, 8:].any()
    wrapper = NoisyClassifierRatio(net)
    wrapper.save_pretrained(tmp_path / "conv")
    loaded = load_wrapper(tmp_path / "conv")
    assert isinstance(loaded.net, ConvScalarNet)
    assert torch.equal(loaded(x, torch.zeros(4)), wrapper(x, torch.zeros(4)))
    timed = ConvScalarNet(_rnn_config(time_conditioning=True))
    with pytest.raises(ValueError, match="time-conditioned"):
        timed(torch.randint(0, 5, (2, 6)), None)


# ---- ensembles of scalar nets (RatioConfig.ensemble) ----------------------------------------


def test_ensemble_net_is_the_members_mean_and_round_trips(tmp_path):
    """The output is the mean of the members' (ids and one-hot alike); from_members copies the
    trained weights; save/load keeps the outputs; mismatched members are refused."""
    from gtlkit.guidance.models import NoisyClassifierRatio, load_wrapper
    from gtlkit.nn import EnsembleScalarNet

    cfg = _rnn_config()
    torch.manual_seed(0)
    nets = [build_scalar_net(cfg, "recurrent").eval() for _ in range(3)]
    ens = EnsembleScalarNet.from_members(nets, "recurrent").eval()
    assert ens.num_parameters() == 3 * nets[0].num_parameters()
    x = torch.randint(0, 5, (4, 6))  # id 4 = [MASK]
    outs = torch.stack([n(x, None) for n in nets])  # [3, B]
    assert not torch.allclose(outs[0], outs[1])  # the members differ
    assert torch.allclose(ens(x, None), outs.mean(0), atol=1e-6)
    onehot = torch.nn.functional.one_hot(x, 5).float()
    assert torch.allclose(ens(onehot, None), outs.mean(0), atol=1e-5)
    wrapper = NoisyClassifierRatio(ens)
    wrapper.save_pretrained(tmp_path / "ens")
    loaded = load_wrapper(tmp_path / "ens")
    assert isinstance(loaded.net, EnsembleScalarNet) and len(loaded.net.members) == 3
    assert torch.equal(loaded(x, None), wrapper(x, None))
    other = build_scalar_net(_rnn_config(d_model=16), "recurrent")
    with pytest.raises(ValueError, match="share"):
        EnsembleScalarNet.from_members([nets[0], other], "recurrent")
    with pytest.raises(ValueError, match="builds"):
        EnsembleScalarNet.from_members(nets, "conv")
    with pytest.raises(ValueError, match="at least one"):
        EnsembleScalarNet(cfg, "recurrent", members=0)


# ---- the transformer with a summed readout (arch="transformer_sum") -------------------------


def test_transformer_sum_readout_is_a_sum_of_position_terms_and_round_trips(tmp_path):
    from gtlkit.guidance.models import NoisyClassifierRatio, load_wrapper

    cfg = _rnn_config(n_heads=2)
    torch.manual_seed(0)
    net = build_scalar_net(cfg, "transformer_sum").eval()
    assert type(net) is ScalarNet and net.readout == "sum"
    perturb_(net)
    x = torch.randint(0, 5, (3, 6))  # mask id 4 included
    per_pos = net.head(net.features(x, None)).squeeze(-1)  # [B, L]
    assert torch.allclose(per_pos.sum(1), net(x), atol=1e-5)
    onehot = torch.nn.functional.one_hot(x, 5).float()
    assert torch.allclose(net(onehot, None), net(x), atol=1e-4)
    # mean pooling stays the default and is a different function
    torch.manual_seed(0)
    mean = ScalarNet(cfg).eval()
    assert mean.readout == "mean" and build_scalar_net(cfg, "transformer").readout == "mean"
    wrapper = NoisyClassifierRatio(net)
    wrapper.save_pretrained(tmp_path / "sum")
    loaded = load_wrapper(tmp_path / "sum")
    assert loaded.net.readout == "sum"
    assert torch.equal(loaded(x, torch.zeros(3)), wrapper(x, torch.zeros(3)))
    rnn = RecurrentScalarNet(_rnn_config())
    rnn.save_pretrained(tmp_path / "rnn")  # the recurrent net saves no readout argument
    assert type(load_wrapper_or_net(tmp_path / "rnn")) is RecurrentScalarNet
    with pytest.raises(ValueError, match="readout"):
        ScalarNet(cfg, readout="max")


def load_wrapper_or_net(path):
    from gtlkit.nn.serialization import from_pretrained

    return from_pretrained(path)


def test_local_conv_branch_mixes_only_neighbours_and_round_trips(tmp_path):
    """conv_kernel=3 with zero attention and MLP: a position's features depend on itself and
    its two neighbours only."""
    import torch

    from gtlkit.nn import DenoiserNet, TransformerConfig

    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=10,
        seq_len=12,
        d_model=16,
        n_layers=1,
        time_conditioning=False,
        positions="rotary",
        conv_kernel=3,
    )
    net = DenoiserNet(cfg)
    block = net.backbone.blocks[0]
    for m in (block.attn.proj, block.mlp[2]):
        torch.nn.init.zeros_(m.weight)
        torch.nn.init.zeros_(m.bias)
    x = torch.randint(0, 10, (1, 12))
    y = x.clone()
    y[0, 8] = (x[0, 8] + 1) % 10
    fx, fy = net.features(x, None), net.features(y, None)
    changed = (fx - fy).abs().sum(-1)[0] > 1e-6
    assert changed.tolist() == [i in (7, 8, 9) for i in range(12)]
    net.save_pretrained(tmp_path / "m")
    back = DenoiserNet.from_pretrained(tmp_path / "m")
    assert back.config.conv_kernel == 3
    assert torch.equal(back(x), net(x))
    with pytest.raises(ValueError, match="conv_kernel"):
        TransformerConfig(vocab_size=10, seq_len=12, conv_kernel=2)


# ---- the bag-of-tokens body (arch="bag") ------------------------------------------------------


def test_bag_body_sums_one_weight_per_revealed_token_and_round_trips(tmp_path):
    from gtlkit.guidance.models import NoisyClassifierRatio, load_wrapper
    from gtlkit.nn import BagScalarNet

    cfg = _rnn_config()  # V = 4, L = 6, no time input
    net = build_scalar_net(cfg, "bag")
    assert type(net) is BagScalarNet and net.num_parameters() == 5
    x = torch.randint(0, 5, (7, 6))  # mask id 4 included
    assert torch.equal(net(x), torch.zeros(7))  # zero-initialised: knows nothing
    perturb_(net)
    w = net.weight.detach()
    assert torch.allclose(net(x), w[x].sum(1))
    # one token changed at one position moves the output by w[new] - w[old], whatever the context
    y = x.clone()
    y[:, 2] = 1
    assert torch.allclose(net(y) - net(x), w[1] - w[x[:, 2]], atol=1e-6)
    scores = net.token_scores(x, torch.full((7,), 2))  # every token at position 2, at once
    assert scores.shape == (7, 4) and torch.allclose(scores[:, 1], net(y) - net(x), atol=1e-6)
    onehot = torch.nn.functional.one_hot(x, 5).float()
    assert torch.allclose(net(onehot, torch.zeros(7)), net(x), atol=1e-6)
    wrapper = NoisyClassifierRatio(net)
    wrapper.save_pretrained(tmp_path / "bag")
    loaded = load_wrapper(tmp_path / "bag")
    assert type(loaded.net) is BagScalarNet
    assert torch.equal(loaded(x, torch.zeros(7)), wrapper(x, torch.zeros(7)))
    with pytest.raises(ValueError, match="no time input"):
        build_scalar_net(_rnn_config(time_conditioning=True), "bag")


# ---- the pair table (arch="pairs") ---------------------------------------------------------------


def test_pair_body_scores_match_brute_force_and_round_trip(tmp_path):
    from gtlkit.guidance.models import NoisyClassifierRatio, load_wrapper
    from gtlkit.nn import PairScalarNet

    cfg = _rnn_config()  # V = 4, L = 6, no time input
    net = build_scalar_net(cfg, "pairs")
    assert type(net) is PairScalarNet and net.num_parameters() == 6 * 5 * 4
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (64, 6), generator=g)  # mask id 4 included
    x[0] = 4  # an all-mask row
    assert torch.equal(net(x), torch.zeros(64))  # zero-initialised: knows nothing
    perturb_(net)
    # the sum over revealed positions of T[gap - 1, previous revealed token (4: start), token]
    T = net.table.detach()
    want = torch.zeros(64)
    for j in range(64):
        prev = -1
        for pos in range(6):
            if x[j, pos] != 4:
                a = 4 if prev < 0 else int(x[j, prev])
                want[j] += T[pos - prev - 1, a, x[j, pos]]
                prev = pos
    assert torch.allclose(net(x), want, atol=1e-5)
    # closed-form candidate scores = output differences, at masked and at revealed positions
    positions = torch.randint(0, 6, (64,), generator=g)
    scores = net.token_scores(x, positions)
    assert scores.shape == (64, 4)
    for v in range(4):
        y = x.clone()
        y[torch.arange(64), positions] = v
        assert torch.allclose(scores[:, v], net(y) - net(x), atol=1e-5)
    onehot = torch.nn.functional.one_hot(x, 5).float()
    assert torch.allclose(net(onehot, torch.zeros(64)), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="one-hot"):
        net(onehot.softmax(-1))
    with pytest.raises(ValueError, match="guidance='exact'"):
        net(onehot.requires_grad_(True))
    wrapper = NoisyClassifierRatio(net)
    wrapper.save_pretrained(tmp_path / "pairs")
    loaded = load_wrapper(tmp_path / "pairs")
    assert type(loaded.net) is PairScalarNet
    assert torch.equal(loaded(x, torch.zeros(64)), wrapper(x, torch.zeros(64)))
    with pytest.raises(ValueError, match="no time input"):
        build_scalar_net(_rnn_config(time_conditioning=True), "pairs")
    with pytest.raises(ValueError, match="large vocabularies"):
        build_scalar_net(_rnn_config(vocab_size=4096, seq_len=128), "pairs")


def test_pair_body_holds_the_exact_log_ratio_of_two_markov_chains():
    """Filled with log(Q^g / P^g) and the position laws' log ratio, the table is the exact log h
    of masked diffusion between two first-order chains, at any set of revealed positions."""
    from gtlkit.data.markov import MarkovChain, transition_matrix
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio

    V, L = 3, 7
    g = torch.Generator().manual_seed(1)
    P = MarkovChain.from_transition(transition_matrix(V, "dirichlet", generator=g))
    Q = MarkovChain.from_transition(transition_matrix(V, "dirichlet", generator=g))
    net = build_scalar_net(_rnn_config(vocab_size=V, seq_len=L), "pairs")

    def powers(c):
        out = [torch.eye(V, dtype=torch.float64)]
        for _ in range(L):
            out.append(out[-1] @ c.transition)
        return torch.stack(out)

    Pq, Pp = powers(Q), powers(P)
    with torch.no_grad():
        for gap in range(1, L + 1):
            net.table[gap - 1, :V] = (Pq[gap].log() - Pp[gap].log()).float()
            # the start row: the law of position gap - 1 (initial law times P^(gap - 1))
            net.table[gap - 1, V] = ((Q.initial @ Pq[gap - 1]).log()).float() - (
                (P.initial @ Pp[gap - 1]).log()
            ).float()
    x = torch.randint(0, V + 1, (256, L), generator=g)
    exact = ExactLogRatio(Q, P)(x)
    assert torch.allclose(net(x), exact, atol=1e-4)
