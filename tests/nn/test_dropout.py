"""Dropout (eq. 7.64) against torch.nn.Dropout, DropConnect against its definition, the recurrent dropout
layers against torch.nn.GRU / LSTM and the GRU equations with explicit masks (figures 7.11, 7.12), and MC
dropout (eqs. 7.65-7.66) against the average written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optreg.nn.dropout as D
from optreg.errors import OptregValueError

f64 = torch.float64


# -------------------------------------------------------------------------------------------- Dropout


def test_dropout_same_numbers_as_torch_dropout_from_the_same_rng_state():
    """Oracle: torch.nn.Dropout with the same p from the same global RNG state (train), identity (eval)."""
    x = torch.randn(50, 40)
    torch.manual_seed(3)
    ours = D.Dropout(0.3).train()(x)
    torch.manual_seed(3)
    ref = nn.Dropout(0.3).train()(x)
    assert torch.equal(ours, ref)
    assert torch.equal(D.Dropout(0.3).eval()(x), x)


def test_dropout_is_inverted_with_drop_probability_p():
    """File 004: kept units are scaled by 1 / (1 - p); the fraction dropped is p; the mean is kept."""
    torch.manual_seed(0)
    x = torch.ones(400_000, dtype=f64)
    y = D.Dropout(0.3).train()(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert (1 - kept.double().mean()).item() == pytest.approx(0.3, abs=5e-3)
    assert y.mean().item() == pytest.approx(1.0, abs=5e-3)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_probability_outside_unit_interval(p):
    for make, owner in ((D.Dropout, "dropout"), (D.VariationalDropout, "variational_dropout")):
        with pytest.raises(OptregValueError, match=rf"{owner}: p must be in \[0, 1\), got {p}"):
            make(p)
    with pytest.raises(OptregValueError, match=rf"drop_connect: p must be in \[0, 1\), got {p}"):
        D.DropConnect(3, 2, p=p)
    with pytest.raises(OptregValueError, match=rf"dropout_gru: recurrent_dropout must be in \[0, 1\), got {p}"):
        D.DropoutGRU(3, 2, recurrent_dropout=p)


# ---------------------------------------------------------------------------------------- DropConnect


def test_dropconnect_drops_weight_entries_with_inverted_scaling():
    """Oracle: the definition y = x (M * W / (1 - p))^T + b with M the weight mask that F.dropout draws from
    the same RNG state; evaluation is nn.Linear with the same weights."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    dc = D.DropConnect.from_linear(lin, p=0.4).train()
    x = torch.randn(5, 6, dtype=f64)
    torch.manual_seed(7)
    out = dc(x)
    torch.manual_seed(7)
    mask = (F.dropout(torch.ones(4, 6, dtype=f64), 0.4, True) != 0).double()
    ref = x @ (mask * lin.weight / 0.6).T + lin.bias
    assert torch.allclose(out, ref, atol=1e-14)
    assert 0 < int((mask == 0).sum()) < 24
    assert torch.equal(dc.eval()(x), lin(x))
    assert list(dc.state_dict()) == ["weight", "bias"]


def test_dropconnect_gradient_reaches_only_kept_weights():
    torch.manual_seed(1)
    dc = D.DropConnect(6, 4, p=0.5).train()
    dc(torch.randn(8, 6)).sum().backward()
    dropped = dc.weight.grad == 0
    assert 0 < int(dropped.sum()) < 24  # a dropped connection gets no gradient this step


# ------------------------------------------------------------------------------------ recurrent nets


def _pair(cls, torch_cls, **kw):
    torch.manual_seed(0)
    ref = torch_cls(3, 5, 2, dtype=f64, **kw)
    ours = cls(3, 5, 2, dtype=f64, **kw)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _ones_masks(t, n, recurrent=True):
    ones = torch.ones
    return D.RNNMasks(
        [ones(1, n, 3, dtype=f64), ones(t, n, 5, dtype=f64)],
        [ones(1, n, 5, dtype=f64), ones(t, n, 5, dtype=f64)] if recurrent else [None, None],
        ones(1, n, 5, dtype=f64),
    )


@pytest.mark.parametrize("batch_first", [False, True])
def test_dropout_gru_equals_torch_gru_without_dropout(batch_first):
    """Oracle: torch.nn.GRU with the same state dict: equal forward (outputs and h_n) in both code paths, the
    fused per-layer kernel and the step-by-step loop (forced by all-ones masks), and equal gradients."""
    ours, ref = _pair(D.DropoutGRU, nn.GRU, batch_first=batch_first)
    x = torch.randn(4, 7, 3, dtype=f64) if batch_first else torch.randn(7, 4, 3, dtype=f64)
    h0 = torch.randn(2, 4, 5, dtype=f64)
    out_ref, h_ref = ref(x, h0)
    for masks in (None, _ones_masks(7, 4)):
        out, h = ours(x, h0, masks=masks)
        assert torch.allclose(out, out_ref, atol=1e-13) and torch.allclose(h, h_ref, atol=1e-13)
    ours(x, h0, masks=_ones_masks(7, 4))[0].square().sum().backward()
    out_ref.square().sum().backward()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-12), name


def test_dropout_lstm_equals_torch_lstm_without_dropout():
    """Oracle: torch.nn.LSTM, both code paths, outputs and (h_n, c_n)."""
    ours, ref = _pair(D.DropoutLSTM, nn.LSTM)
    x = torch.randn(6, 3, 3, dtype=f64)
    hx = (torch.randn(2, 3, 5, dtype=f64), torch.randn(2, 3, 5, dtype=f64))
    out_ref, (h_ref, c_ref) = ref(x, hx)
    for masks in (None, _ones_masks(6, 3)):
        out, (h, c) = ours(x, hx, masks=masks)
        assert torch.allclose(out, out_ref, atol=1e-13)
        assert torch.allclose(h, h_ref, atol=1e-13) and torch.allclose(c, c_ref, atol=1e-13)


def test_dropout_gru_in_eval_mode_is_torch_gru_even_with_dropout_rates():
    ours, ref = _pair(D.DropoutGRU, nn.GRU)
    ours.dropout = ours.recurrent_dropout = 0.5
    ours.eval()
    x = torch.randn(5, 2, 3, dtype=f64)
    assert torch.allclose(ours(x)[0], ref(x)[0], atol=1e-13)


def gru_reference(x, params, masks, hidden):
    """The GRU equations of torch (r, z, n gates) with Gal & Ghahramani's masks, written out for one layer:
    x_t * m_x enters W_ih, h_{t-1} * m_h enters W_hh, the state carried on (z * h_{t-1}) is not dropped."""
    w_ih, w_hh, b_ih, b_hh = params
    h = torch.zeros(x.shape[1], hidden, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        mx = masks.inputs[0][t if masks.inputs[0].shape[0] > 1 else 0]
        mh = masks.recurrent[0][t if masks.recurrent[0].shape[0] > 1 else 0]
        gi = (x[t] * mx) @ w_ih.T + b_ih
        gh = (h * mh) @ w_hh.T + b_hh
        r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
        n = torch.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
        h = (1 - z) * n + z * h
        outs.append(h)
    out = torch.stack(outs)
    mo = masks.output
    return out * (mo if mo.shape[0] == 1 else mo), h


@pytest.mark.parametrize("variational", [True, False])
def test_gru_masks_are_shared_over_time_only_when_variational(variational):
    """Mask sharing, directly: the masks drawn for a training pass have one time slice (variational, figure
    7.12) or one per time step (figure 7.11 / naive), and the forward pass equals the GRU equations written
    out with exactly those masks."""
    torch.manual_seed(0)
    gru = D.DropoutGRU(3, 6, dropout=0.4, recurrent_dropout=0.4, variational=variational, dtype=f64).train()
    x = torch.randn(8, 4, 3, dtype=f64)
    masks = gru.sample_masks(8, 4, x)
    steps = 1 if variational else 8
    assert masks.inputs[0].shape == (steps, 4, 3)
    assert masks.recurrent[0].shape == (steps, 4, 6)
    assert masks.output.shape == (steps, 4, 6)
    for m in (masks.inputs[0], masks.recurrent[0], masks.output):
        assert set(torch.unique(m).tolist()) <= {0.0, 1 / 0.6}
    out, h = gru(x, masks=masks)
    ref_out, ref_h = gru_reference(x, [p.detach() for p in gru.parameters()], masks, 6)
    assert torch.allclose(out, ref_out, atol=1e-13) and torch.allclose(h[0], ref_h, atol=1e-13)


def _cell_reference(rnn, x, masks, lstm):
    """The stacked net step by step with torch.nn.GRUCell / LSTMCell (torch's own cell, our weights), the
    masks applied as documented: the input mask on each layer's input, the recurrent mask on h_{t-1} entering
    W_hh (with ``drop_state``: on the state carried on), the output mask on the last layer's outputs."""
    seq, batch = x.shape[0], x.shape[1]
    for k in range(rnn.num_layers):
        n_in = rnn.input_size if k == 0 else rnn.hidden_size
        cell = (nn.LSTMCell if lstm else nn.GRUCell)(n_in, rnn.hidden_size, dtype=x.dtype)
        w = {n: getattr(rnn, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        h = x.new_zeros(batch, rnn.hidden_size)
        c = x.new_zeros(batch, rnn.hidden_size)
        mi, mh = masks.inputs[k], masks.recurrent[k]
        outs = []
        for t in range(seq):
            xt = x[t] * mi[t % mi.shape[0]]
            m = mh[t % mh.shape[0]]
            if rnn.drop_state:
                h = h * m
                hw, hz = h, h
            else:
                hw, hz = h * m, h
            # the cell sees h_{t-1} * m in W_hh; the GRU's carried term z * h_{t-1} uses the undropped state
            if lstm:
                h, c = torch.func.functional_call(cell, w, (xt, (hw, c)))
            else:
                gh = hw @ w["weight_hh"].T + w["bias_hh"]
                gi = xt @ w["weight_ih"].T + w["bias_ih"]
                z = torch.sigmoid(gi.chunk(3, 1)[1] + gh.chunk(3, 1)[1])
                cell_h = torch.func.functional_call(cell, w, (xt, hw))  # = (1 - z) n + z * hw
                h = cell_h + z * (hz - hw)  # torch's cell with the carried term on the undropped state
            outs.append(h)
        x = torch.stack(outs)
    return x * masks.output


@pytest.mark.parametrize("lstm", [False, True])
@pytest.mark.parametrize("mode", ["per_step", "variational", "drop_state"])
def test_dropout_rnn_loop_equals_torch_cells_step_by_step_outputs_and_gradients(lstm, mode):
    """Oracle: torch.nn.GRUCell / LSTMCell stepped by hand over two stacked layers with the same weights and
    masks: the fast loop (unbind, fused gates, lerp / addcmul) gives the same outputs and the same gradients
    of the input and of every parameter (float64)."""
    torch.manual_seed(0)
    cls = D.DropoutLSTM if lstm else D.DropoutGRU
    rnn = cls(3, 5, 2, dropout=0.3, recurrent_dropout=0.4, variational=mode == "variational",
              drop_state=mode == "drop_state", dtype=f64).train()
    x = torch.randn(9, 4, 3, dtype=f64, requires_grad=True)
    masks = rnn.sample_masks(9, 4, x)
    out = rnn(x, masks=masks)[0]
    ref = _cell_reference(rnn, x, masks, lstm)
    assert torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *rnn.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *rnn.parameters()], g)
    for (name, _), a, b in zip([("x", x), *rnn.named_parameters()], grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-11), name


def test_drop_state_erases_the_memory_of_a_sequence_whose_whole_state_is_dropped():
    """drop_state (the chapter's naive form): the dropped state is what is carried on, so d h_T / d x_1 of a
    sequence is exactly zero when its whole state was dropped at some step t >= 2 (recomputed from the masks),
    and not otherwise; the default recurrent mask (on h_{t-1} entering W_hh) keeps the carried path
    z * h_{t-1}, so the first input always reaches h_T."""
    torch.manual_seed(0)
    x = torch.randn(12, 16, 3, dtype=f64, requires_grad=True)
    for drop_state in (True, False):
        gru = D.DropoutGRU(3, 2, recurrent_dropout=0.5, drop_state=drop_state, dtype=f64).train()
        masks = gru.sample_masks(12, 16, x)
        (grad,) = torch.autograd.grad(gru(x, masks=masks)[1][-1].sum(), x)
        erased = (masks.recurrent[0][1:] == 0).all(dim=2).any(dim=0)  # (N,): a step with every unit dropped
        assert 0 < int(erased.sum()) < 16
        expected = erased if drop_state else torch.zeros_like(erased)
        assert torch.equal((grad[0] == 0).all(dim=1), expected)


@pytest.mark.parametrize("variational", [True, False])
def test_variational_input_mask_is_the_same_at_every_time_step(variational):
    """The observable consequence: with variational dropout, d output / d x[t, n, f] is zero for every t
    exactly when input feature f of sequence n was dropped; without it, the zero pattern changes over time."""
    torch.manual_seed(1)
    gru = D.DropoutGRU(10, 8, dropout=0.5, variational=variational).train()
    x = torch.randn(12, 3, 10, requires_grad=True)
    gru(x)[0].sum().backward()
    zero = x.grad == 0  # (T, N, F)
    assert zero.any()
    same_over_time = bool((zero == zero[0:1]).all())
    assert same_over_time == variational


def test_variational_dropout_module_shares_its_mask_over_time():
    """VariationalDropout: one mask per sequence and feature, broadcast over T; identity in eval."""
    torch.manual_seed(0)
    x = torch.ones(9, 4, 7)
    y = D.VariationalDropout(0.5).train()(x)
    assert torch.equal(y, y[0:1].expand_as(y))
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    yb = D.VariationalDropout(0.5, batch_first=True).train()(x)  # (N, T, F): shared over dim 1
    assert torch.equal(yb, yb[:, 0:1].expand_as(yb))
    assert torch.equal(D.VariationalDropout(0.5).eval()(x), x)


def test_recurrent_dropout_modes_train_a_gru_classifier():
    """The three settings of section 7.7.4.1 all train (loss falls) on a toy sequence task."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, 2, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    for kw in ({"dropout": 0.2}, {"dropout": 0.2, "recurrent_dropout": 0.2, "variational": True},
               {"recurrent_dropout": 0.2}):
        torch.manual_seed(0)
        gru = D.DropoutGRU(2, 12, batch_first=True, **kw)
        head = nn.Linear(12, 2)
        params = [*gru.parameters(), *head.parameters()]
        opt = torch.optim.SGD(params, lr=0.5)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(head(gru(x)[1][-1]), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.9 * losses[0], kw


def test_dropout_rnn_bad_input():
    gru = D.DropoutGRU(3, 4)
    with pytest.raises(OptregValueError, match="dropout_gru: input has 2 features, expected 3"):
        gru(torch.zeros(5, 2, 2))
    with pytest.raises(OptregValueError, match=r"dropout_gru: hx must have shape \(1, 2, 4\)"):
        gru(torch.zeros(5, 2, 3), torch.zeros(2, 4))
    with pytest.raises(OptregValueError, match="dropout_lstm: hx must be a tuple"):
        D.DropoutLSTM(3, 4)(torch.zeros(5, 2, 3), torch.zeros(1, 2, 4))


# ----------------------------------------------------------------------------------------- MC dropout


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), D.Dropout(0.5), nn.BatchNorm1d(16), nn.Linear(16, 3))


def test_mc_dropout_is_the_average_of_dropout_samples_eq_7_66():
    """Oracle: eq. (7.66) written out, (1/M) sum_m softmax(f(x, theta_m)), with dropout on and batch norm in
    evaluation mode, drawn from the same seeded RNG; the std is the spread of the same samples."""
    model = mlp()
    x = torch.randn(5, 4)
    mean, std = D.mc_dropout_predict(model, x, samples=20, generator=torch.Generator().manual_seed(4))
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(4)))
    model.eval()
    model[2].train()
    torch.manual_seed(seed)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(model(x), -1) for _ in range(20)])
    assert torch.allclose(mean, probs.mean(0), atol=1e-7)
    assert torch.allclose(std, probs.std(0, correction=0), atol=1e-7)
    assert torch.allclose(mean.sum(-1), torch.ones(5), atol=1e-6)
    assert (std > 0).any()


def test_mc_dropout_restores_modes_and_the_callers_rng():
    model = mlp().train()
    model[3].eval()  # a mixed state must come back as it was
    modes = [m.training for m in model.modules()]
    x = torch.randn(5, 4)
    state = torch.get_rng_state()
    a = D.mc_dropout_predict(model, x, samples=5, generator=torch.Generator().manual_seed(0))
    b = D.mc_dropout_predict(model, x, samples=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # reproducible
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), state)
    assert model[3].num_batches_tracked.item() == 0  # batch norm stayed in eval: no statistics updated


def test_mc_dropout_without_dropout_layers_has_zero_spread_and_bad_samples():
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(2, 4)
    mean, std = D.mc_dropout_predict(model, x, samples=4)
    assert torch.allclose(mean, torch.softmax(model(x), -1).detach(), atol=1e-7)
    assert torch.equal(std, torch.zeros_like(std))
    with pytest.raises(OptregValueError, match="mc_dropout_predict: samples must be an integer >= 1, got 0"):
        D.mc_dropout_predict(model, torch.randn(2, 4), samples=0)


# ------------------------------------------------------------------- the model builder's dropout schemes


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("scheme", ["non_recurrent", "recurrent", "state", "variational"])
def test_model_dropout_scheme_builds_the_dropout_rnn_and_evaluates_as_torchs(kind, scheme):
    """optreg.nn.build with ``dropout_scheme``: the recurrent layer is DropoutGRU / DropoutLSTM with the
    scheme's options; in evaluation the classifier equals the default one (torch.nn.GRU / LSTM, oracle) with
    the same state dict; in training its logits are the head of the last masked output step."""
    from optreg.nn import build

    spec = {"kind": kind, "in_features": 2, "hidden_size": 6, "num_layers": 2, "out_features": 3, "dropout": 0.3}
    torch.manual_seed(0)
    ours = build({**spec, "dropout_scheme": scheme, "input_dropout": 0.1})
    ref = build(spec)
    ref.load_state_dict(ours.state_dict())
    rnn = ours.rnn
    assert isinstance(rnn, D.DropoutLSTM if kind == "lstm" else D.DropoutGRU)
    assert (rnn.dropout, rnn.input_dropout) == (0.3, 0.1)
    assert rnn.recurrent_dropout == (0.0 if scheme == "non_recurrent" else 0.3)
    assert (rnn.variational, rnn.drop_state) == (scheme == "variational", scheme == "state")
    x = torch.randn(5, 7, 2)
    assert torch.allclose(ours.eval()(x), ref.eval()(x), atol=1e-6)
    ours.train()
    torch.manual_seed(3)
    logits = ours(x)
    torch.manual_seed(3)
    out = rnn(x)[0]
    assert torch.allclose(logits, ours.head(out[:, -1]))


def test_model_dropout_scheme_bad_input():
    from optreg.nn import build

    gru = {"kind": "gru", "in_features": 1, "hidden_size": 4, "out_features": 2}
    with pytest.raises(OptregValueError, match="models.gru: dropout_scheme must be one of .*got 'zaremba'"):
        build({**gru, "dropout_scheme": "zaremba"})
    with pytest.raises(OptregValueError, match="a bidirectional net takes only 'between'"):
        build({**gru, "dropout_scheme": "variational", "bidirectional": True})
    with pytest.raises(OptregValueError, match="models.rnn: unknown key 'dropout_scheme'"):
        build({**gru, "kind": "rnn", "dropout_scheme": "variational"})
    with pytest.raises(OptregValueError, match=r"models.gru: input_dropout must be in \[0, 1\)"):
        build({**gru, "input_dropout": 1.0})
