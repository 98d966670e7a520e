"""Each method loss equals its formula on tiny hand-made logits, and its gradient points the right way.

Expected values are computed with plain-Python loops (`math`, no torch ops) so that they do not
share code with the implementation. Shift convention: logits at position t score label t+1.
"""

from __future__ import annotations

import math

import pytest
import torch

from uld.data.refusals import REFUSALS, pick_refusal
from uld.errors import UldError
from uld.methods import LossInputs, available_methods, get_method
from uld.methods.rmu import rmu_control

# ----------------------------------------------------------------------------- naive references


def logsoftmax(row: list[float]) -> list[float]:
    m = max(row)
    z = math.log(sum(math.exp(x - m) for x in row)) + m
    return [x - z for x in row]


def naive_token_nlls(logits: torch.Tensor, labels: torch.Tensor) -> list[list[float]]:
    """Per sequence, the list of -log p(label[t+1] | position t) over scored targets."""
    out = []
    for b in range(logits.shape[0]):
        seq = []
        for t in range(logits.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y != -100:
                seq.append(-logsoftmax(logits[b, t].tolist())[y])
        out.append(seq)
    return out


def naive_mean_nll(logits, labels) -> float:
    flat = [x for seq in naive_token_nlls(logits, labels) for x in seq]
    return sum(flat) / len(flat)


def naive_seq_logp(logits, labels) -> list[float]:
    return [-sum(seq) for seq in naive_token_nlls(logits, labels)]


def naive_kl_uniform(row: list[float]) -> float:
    v = len(row)
    return sum((1 / v) * (math.log(1 / v) - lp) for lp in logsoftmax(row))


def naive_kl_ref(ref_row: list[float], row: list[float]) -> float:
    lr, lp = logsoftmax(ref_row), logsoftmax(row)
    return sum(math.exp(a) * (a - b) for a, b in zip(lr, lp, strict=True))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ----------------------------------------------------------------------------- tiny inputs

# B=2, T=3, V=3. Sequence 0 scores tokens 1 and 2; sequence 1 scores only token 2 (token 1 is
# prompt). Retain sequence 1 is right-padded: its last position is padding.
FORGET_LOGITS = torch.tensor(
    [
        [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [0.2, 0.2, 0.9]],
        [[-0.5, 0.1, 1.5], [1.2, -0.3, 0.0], [0.4, 0.0, -0.4]],
    ]
)
FORGET_LABELS = torch.tensor([[-100, 0, 2], [-100, -100, 1]])
RETAIN_LOGITS = torch.tensor(
    [
        [[1.0, 0.0, 0.0], [0.3, -0.2, 2.0], [0.0, 0.5, 0.5]],
        [[0.0, 2.0, -1.0], [0.7, 0.7, 0.1], [3.0, 3.0, -3.0]],
    ]
)
RETAIN_LABELS = torch.tensor([[-100, 1, 2], [-100, 0, -100]])
RETAIN_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
REF_SHIFT = torch.tensor([0.3, -0.4, 0.1])  # the reference differs from the policy by a shift


def make_inputs(**kw) -> LossInputs:
    base = dict(
        forget_logits=FORGET_LOGITS.clone().requires_grad_(True),
        forget_labels=FORGET_LABELS,
        retain_logits=RETAIN_LOGITS.clone().requires_grad_(True),
        retain_labels=RETAIN_LABELS,
        retain_mask=RETAIN_MASK,
    )
    base.update(kw)
    return LossInputs(**base)


def naive_retain_kl_uniform() -> float:
    # Real predicting positions: seq 0 -> t = 0, 1; seq 1 -> t = 0 only (token 2 is padding).
    rows = [RETAIN_LOGITS[0, 0], RETAIN_LOGITS[0, 1], RETAIN_LOGITS[1, 0]]
    return sum(naive_kl_uniform(r.tolist()) for r in rows) / len(rows)


# ----------------------------------------------------------------------------- ULD


def test_uld_loss_is_forget_nll_plus_beta_kl_uniform_over_real_positions():
    loss, logs = get_method("uld")(make_inputs())
    nll = naive_mean_nll(FORGET_LOGITS, FORGET_LABELS)
    kl = naive_retain_kl_uniform()
    assert loss.item() == pytest.approx(nll + 6.5 * kl, rel=1e-5)
    assert logs["forget_nll"] == pytest.approx(nll, rel=1e-5)
    assert logs["retain_kl_uniform"] == pytest.approx(kl, rel=1e-5)
    probs = [math.exp(-sum(s) / len(s)) for s in naive_token_nlls(FORGET_LOGITS, FORGET_LABELS)]
    assert logs["forget_prob"] == pytest.approx(sum(probs) / 2, rel=1e-5)


def test_uld_all_positions_switch_averages_over_every_position_like_the_official_code():
    loss, logs = get_method("uld")(make_inputs(), uniform_all_positions=True, beta=5.0)
    rows = [RETAIN_LOGITS[b, t].tolist() for b in range(2) for t in range(3)]
    kl = sum(naive_kl_uniform(r) for r in rows) / 6
    assert logs["retain_kl_uniform"] == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(naive_mean_nll(FORGET_LOGITS, FORGET_LABELS) + 5.0 * kl, rel=1e-5)


def test_uld_handles_left_padding_by_skipping_positions_before_the_first_real_token():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    _, logs = get_method("uld")(make_inputs(retain_mask=mask))
    rows = [RETAIN_LOGITS[0, 1], RETAIN_LOGITS[1, 0], RETAIN_LOGITS[1, 1]]
    kl = sum(naive_kl_uniform(r.tolist()) for r in rows) / 3
    assert logs["retain_kl_uniform"] == pytest.approx(kl, rel=1e-5)


def test_uld_retain_term_is_minimal_and_flat_at_uniform_retain_logits():
    flat = torch.full((2, 3, 3), 0.7, requires_grad=True)
    loss_flat, logs = get_method("uld")(make_inputs(retain_logits=flat))
    assert logs["retain_kl_uniform"] == pytest.approx(0.0, abs=1e-6)
    loss_flat.backward()
    assert flat.grad.abs().max().item() < 1e-6  # a stationary point: KL(U||p) >= 0 = its value
    _, logs_peaked = get_method("uld")(make_inputs())
    assert logs_peaked["retain_kl_uniform"] > 0.05


def test_uld_gradient_step_lowers_forget_nll_and_flattens_retain():
    inputs = make_inputs()
    loss, before = get_method("uld")(inputs)
    loss.backward()
    lr = 0.05
    after_inputs = make_inputs(
        forget_logits=(inputs.forget_logits - lr * inputs.forget_logits.grad).detach(),
        retain_logits=(inputs.retain_logits - lr * inputs.retain_logits.grad).detach(),
    )
    _, after = get_method("uld")(after_inputs)
    assert after["forget_nll"] < before["forget_nll"]
    assert after["retain_kl_uniform"] < before["retain_kl_uniform"]


def test_uld_warmup_drops_the_retain_term_only_while_the_forget_nll_is_above_the_threshold():
    nll = naive_mean_nll(FORGET_LOGITS, FORGET_LABELS)  # 1.162 nats on these logits
    kl = naive_retain_kl_uniform()
    loss, logs = get_method("uld")(make_inputs(), warmup_forget_nll=1.0)  # 1.162 > 1.0: warming up
    assert loss.item() == pytest.approx(nll, rel=1e-5)
    assert logs["retain_term_on"].item() == 0.0
    assert logs["retain_kl_uniform"] == pytest.approx(kl, rel=1e-5)  # still logged
    inputs = make_inputs()
    get_method("uld")(inputs, warmup_forget_nll=1.0)[0].backward()
    assert inputs.retain_logits.grad is None  # no gradient reaches the retain logits
    loss, logs = get_method("uld")(make_inputs(), warmup_forget_nll=1.5)  # below the threshold: the full loss
    assert loss.item() == pytest.approx(nll + 6.5 * kl, rel=1e-5)
    assert logs["retain_term_on"].item() == 1.0
    with pytest.raises(UldError, match="warmup_forget_nll"):
        get_method("uld").parse_options({"warmup_forget_nll": 0})


# ----------------------------------------------------------------------------- GA family


def test_ga_is_negative_forget_nll_and_its_step_raises_the_nll():
    inputs = make_inputs()
    loss, logs = get_method("ga")(inputs)
    nll = naive_mean_nll(FORGET_LOGITS, FORGET_LABELS)
    assert loss.item() == pytest.approx(-nll, rel=1e-5)
    loss.backward()
    stepped = (inputs.forget_logits - 0.1 * inputs.forget_logits.grad).detach()
    assert naive_mean_nll(stepped, FORGET_LABELS) > nll


def test_gd_adds_weighted_retain_nll():
    loss, logs = get_method("gd")(make_inputs(), forget_weight=2.0, retain_weight=0.5)
    f = naive_mean_nll(FORGET_LOGITS, FORGET_LABELS)
    r = naive_mean_nll(RETAIN_LOGITS, RETAIN_LABELS)
    assert loss.item() == pytest.approx(-2.0 * f + 0.5 * r, rel=1e-5)
    assert logs["retain_nll"] == pytest.approx(r, rel=1e-5)


def test_ga_kl_adds_kl_from_reference_to_policy_on_real_retain_positions():
    ref = RETAIN_LOGITS + REF_SHIFT * torch.tensor([[[1.0]], [[-2.0]]])
    loss, logs = get_method("ga_kl")(make_inputs(ref_retain_logits=ref))
    positions = [(0, 0), (0, 1), (1, 0)]
    kl = sum(naive_kl_ref(ref[b, t].tolist(), RETAIN_LOGITS[b, t].tolist()) for b, t in positions) / 3
    assert logs["retain_kl_ref"] == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(-naive_mean_nll(FORGET_LOGITS, FORGET_LABELS) + kl, rel=1e-5)
    _, same = get_method("ga_kl")(make_inputs(ref_retain_logits=RETAIN_LOGITS.clone()))
    assert same["retain_kl_ref"] == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- NPO family


def test_npo_at_policy_equal_reference_is_two_over_beta_log_two():
    loss, logs = get_method("npo")(make_inputs(ref_forget_logits=FORGET_LOGITS.clone()))
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-5)
    assert logs["forget_logratio"] == pytest.approx(0.0, abs=1e-6)


def test_npo_matches_formula_with_summed_sequence_logprobs():
    ref = FORGET_LOGITS + REF_SHIFT
    ref[1, 1, 1] += 0.8  # changes the one scored token of sequence 1
    beta = 0.5
    loss, _ = get_method("npo")(make_inputs(ref_forget_logits=ref), beta=beta)
    ratios = [a - b for a, b in zip(naive_seq_logp(FORGET_LOGITS, FORGET_LABELS), naive_seq_logp(ref, FORGET_LABELS), strict=True)]
    expected = -(2 / beta) * sum(log_sigmoid(-beta * r) for r in ratios) / len(ratios)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_npo_gradient_pushes_forget_logprob_down():
    inputs = make_inputs(ref_forget_logits=FORGET_LOGITS.clone())
    loss, _ = get_method("npo")(inputs)
    loss.backward()
    stepped = (inputs.forget_logits - 0.1 * inputs.forget_logits.grad).detach()
    before = naive_seq_logp(FORGET_LOGITS, FORGET_LABELS)
    after = naive_seq_logp(stepped, FORGET_LABELS)
    assert all(a < b for a, b in zip(after, before, strict=True))


def test_npo_gd_and_npo_kl_add_their_retain_terms():
    ref_f = FORGET_LOGITS.clone()
    npo0 = 2 / 0.1 * math.log(2)
    loss, _ = get_method("npo_gd")(make_inputs(ref_forget_logits=ref_f), retain_weight=3.0)
    assert loss.item() == pytest.approx(npo0 + 3.0 * naive_mean_nll(RETAIN_LOGITS, RETAIN_LABELS), rel=1e-5)
    ref_r = RETAIN_LOGITS + REF_SHIFT
    loss, logs = get_method("npo_kl")(make_inputs(ref_forget_logits=ref_f, ref_retain_logits=ref_r), forget_weight=0.5)
    positions = [(0, 0), (0, 1), (1, 0)]
    kl = sum(naive_kl_ref(ref_r[b, t].tolist(), RETAIN_LOGITS[b, t].tolist()) for b, t in positions) / 3
    assert loss.item() == pytest.approx(0.5 * npo0 + kl, rel=1e-5)


# ----------------------------------------------------------------------------- SimNPO


def test_simnpo_matches_length_normalised_formula():
    beta, gamma, fw, alpha = 2.5, 0.3, 0.2, 0.7
    loss, logs = get_method("simnpo")(make_inputs(), beta=beta, gamma=gamma, forget_weight=fw, retain_weight=alpha)
    seqs = naive_token_nlls(FORGET_LOGITS, FORGET_LABELS)  # lengths 2 and 1
    terms = [log_sigmoid(-(beta / len(s)) * (-sum(s)) - gamma) for s in seqs]
    simnpo = -(2 / beta) * sum(terms) / len(terms)
    assert logs["simnpo_loss"] == pytest.approx(simnpo, rel=1e-5)
    retain = naive_mean_nll(RETAIN_LOGITS, RETAIN_LABELS)
    assert loss.item() == pytest.approx(fw * simnpo + alpha * retain, rel=1e-5)


def test_simnpo_gradient_raises_forget_nll():
    inputs = make_inputs()
    loss, _ = get_method("simnpo")(inputs, retain_weight=0.0)
    loss.backward()
    stepped = (inputs.forget_logits - 0.5 * inputs.forget_logits.grad).detach()
    assert naive_mean_nll(stepped, FORGET_LABELS) > naive_mean_nll(FORGET_LOGITS, FORGET_LABELS)


# ----------------------------------------------------------------------------- IdkPO (DPO)

ALT_LOGITS = torch.tensor(
    [
        [[0.1, 0.9, 0.0], [0.5, 0.5, 1.5], [0.0, 0.0, 0.0]],
        [[1.0, -1.0, 0.2], [0.0, 0.3, 0.6], [0.2, 0.1, 0.0]],
    ]
)
ALT_LABELS = torch.tensor([[-100, 1, 1], [-100, 2, 0]])


def idk_inputs(ref_alt, ref_forget) -> LossInputs:
    return make_inputs(
        alt_logits=ALT_LOGITS.clone().requires_grad_(True),
        alt_labels=ALT_LABELS,
        ref_alt_logits=ref_alt,
        ref_forget_logits=ref_forget,
    )


def test_idkpo_at_policy_equal_reference_is_log_two_plus_retain():
    loss, logs = get_method("idkpo")(idk_inputs(ALT_LOGITS.clone(), FORGET_LOGITS.clone()), retain_weight=0.0)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-5)
    loss, _ = get_method("idkpo")(idk_inputs(ALT_LOGITS.clone(), FORGET_LOGITS.clone()))
    assert loss.item() == pytest.approx(math.log(2) + naive_mean_nll(RETAIN_LOGITS, RETAIN_LABELS), rel=1e-5)


def test_idkpo_matches_dpo_formula_and_gradient_prefers_the_refusal():
    ref_alt, ref_forget = ALT_LOGITS - REF_SHIFT, FORGET_LOGITS + REF_SHIFT
    inputs = idk_inputs(ref_alt, ref_forget)
    beta = 0.1
    loss, logs = get_method("idkpo")(inputs, retain_weight=0.0)
    cw = [a - b for a, b in zip(naive_seq_logp(ALT_LOGITS, ALT_LABELS), naive_seq_logp(ref_alt, ALT_LABELS), strict=True)]
    cl = [a - b for a, b in zip(naive_seq_logp(FORGET_LOGITS, FORGET_LABELS), naive_seq_logp(ref_forget, FORGET_LABELS), strict=True)]
    expected = -sum(log_sigmoid(beta * (w - lo)) for w, lo in zip(cw, cl, strict=True)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    alt_step = (inputs.alt_logits - 1.0 * inputs.alt_logits.grad).detach()
    forget_step = (inputs.forget_logits - 1.0 * inputs.forget_logits.grad).detach()
    assert sum(naive_seq_logp(alt_step, ALT_LABELS)) > sum(naive_seq_logp(ALT_LOGITS, ALT_LABELS))
    assert sum(naive_seq_logp(forget_step, FORGET_LABELS)) < sum(naive_seq_logp(FORGET_LOGITS, FORGET_LABELS))


# ----------------------------------------------------------------------------- RMU


def test_rmu_matches_mean_squared_distance_to_control_and_frozen_states():
    fh = torch.tensor([[[1.0, 2.0], [0.0, 1.0]], [[3.0, -1.0], [9.0, 9.0]]], requires_grad=True)
    forget_mask = torch.tensor([[1, 1], [1, 0]])  # the (9, 9) token is padding
    rh = torch.tensor([[[0.5, 0.5], [1.0, 1.0]]], requires_grad=True)
    ref_rh = torch.tensor([[[0.0, 0.5], [1.0, 3.0]]])
    control = torch.tensor([1.0, 1.0])
    inputs = make_inputs(
        forget_hidden=fh, forget_mask=forget_mask, retain_hidden=rh, ref_retain_hidden=ref_rh,
        retain_mask=torch.ones(1, 2), prepared={"control": control},
    )
    loss, logs = get_method("rmu")(inputs, retain_weight=10.0)
    # forget: tokens (1,2) -> (0+1)/2, (0,1) -> (1+0)/2, (3,-1) -> (4+4)/2; mean = (0.5+0.5+4)/3
    forget = (0.5 + 0.5 + 4.0) / 3
    # retain: (0.25+0)/2 = 0.125 and (0+4)/2 = 2; mean = 1.0625
    retain = (0.125 + 2.0) / 2
    assert logs["forget_mse"] == pytest.approx(forget)
    assert logs["retain_mse"] == pytest.approx(retain)
    assert loss.item() == pytest.approx(forget + 10.0 * retain)
    loss.backward()
    assert fh.grad[1, 1].abs().max().item() == 0.0  # padding gets no gradient


def test_rmu_control_has_the_steering_norm_and_is_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    c1, c2 = rmu_control(16, 6.5, g1), rmu_control(16, 6.5, g2)
    assert c1.norm().item() == pytest.approx(6.5, rel=1e-6)
    assert torch.equal(c1, c2) and (c1 >= 0).all()


# ----------------------------------------------------------------------------- registry contract


def random_inputs(needs: frozenset[str], seed: int = 0) -> LossInputs:
    g = torch.Generator().manual_seed(seed)
    b, t, v, h = 2, 5, 7, 4

    def logits(grad: bool = True):
        x = torch.randn(b, t, v, generator=g)
        return x.requires_grad_(grad)

    def labels():
        y = torch.randint(0, v, (b, t), generator=g)
        y[:, :2] = -100  # prompt
        return y

    kw: dict = dict(forget_logits=logits(), forget_labels=labels(), forget_mask=torch.ones(b, t))
    if "retain" in needs:
        kw.update(retain_logits=logits(), retain_labels=labels(), retain_mask=torch.ones(b, t))
    if "reference" in needs:
        kw.update(ref_forget_logits=logits(False), ref_retain_logits=logits(False))
    if "alt" in needs:
        kw.update(alt_logits=logits(), alt_labels=labels())
        if "reference" in needs:
            kw["ref_alt_logits"] = logits(False)
    if "hidden" in needs:
        kw.update(
            forget_hidden=torch.randn(b, t, h, generator=g, requires_grad=True),
            retain_hidden=torch.randn(b, t, h, generator=g, requires_grad=True),
            ref_retain_hidden=torch.randn(b, t, h, generator=g),
            prepared={"control": rmu_control(h, 6.5, g)},
        )
    return LossInputs(**kw)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_returns_a_finite_scalar_with_grad_and_detached_scalar_logs(name):
    spec = get_method(name)
    inputs = random_inputs(spec.needs)
    loss, logs = spec(inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert loss.requires_grad
    loss.backward()
    grads = [
        getattr(inputs, f).grad
        for f in ("forget_logits", "retain_logits", "alt_logits", "forget_hidden", "retain_hidden")
        if getattr(inputs, f) is not None
    ]
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)
    assert logs and all(
        isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad and math.isfinite(v.item())
        for v in logs.values()
    )


@pytest.mark.parametrize("name", available_methods())
def test_every_method_names_its_paper_default_hyperparameters_and_rejects_unknown_options(name):
    spec = get_method(name)
    with pytest.raises(UldError, match="unknown option"):
        spec(random_inputs(spec.needs), not_an_option=1.0)


@pytest.mark.parametrize("name", [n for n in available_methods() if get_method(n).needs])
def test_a_method_given_inputs_without_its_needs_says_which_tensor_is_missing(name):
    with pytest.raises(ValueError, match="needs LossInputs"):
        get_method(name)(random_inputs(frozenset()))


def test_paper_defaults():
    assert get_method("uld").defaults == {"beta": 6.5, "uniform_all_positions": False, "warmup_forget_nll": None}
    assert get_method("npo").defaults["beta"] == 0.1
    assert get_method("idkpo").defaults["beta"] == 0.1
    rmu = get_method("rmu").defaults
    assert (rmu["steering_coeff"], rmu["retain_weight"], rmu["layer"], rmu["update_layers"]) == (6.5, 1200.0, 7, (5, 6, 7))
    assert (get_method("uld").lr, get_method("rmu").lr, get_method("npo").lr) == (1e-3, 5e-5, 1e-5)


# ----------------------------------------------------------------------------- refusals


def test_refusals_are_forty_distinct_sentences_picked_deterministically():
    assert len(REFUSALS) == 40 and len(set(REFUSALS)) == 40
    picks = [pick_refusal(f"question {i}") for i in range(200)]
    assert picks == [pick_refusal(f"question {i}") for i in range(200)]
    assert len(set(picks)) > 30  # spread over the list, not one sentence
    assert [pick_refusal(i, seed=1) for i in range(20)] != [pick_refusal(i, seed=0) for i in range(20)]


# ----------------------------------------------------------------------------- the documented example


def test_the_documented_new_method_registers_trains_only_its_blocks_and_checks_its_options(monkeypatch):
    """The worked example of docs/methods.md, run as written: one file is a whole method."""
    from pathlib import Path

    from uld.methods import base
    from uld.testing import tiny_llama
    from uld.train.config import make_config
    from uld.train.policy import build_policy

    doc = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    base._load_all()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    import sys
    import types

    module = types.ModuleType("ga_last")
    monkeypatch.setitem(sys.modules, "ga_last", module)
    exec(compile(code, "ga_last.py", "exec"), module.__dict__)

    spec = get_method("ga_last")
    loss, logs = spec(make_inputs(), cap=0.5)
    capped = [min(x, 0.5) for seq in naive_token_nlls(FORGET_LOGITS, FORGET_LABELS) for x in seq]
    assert loss.item() == pytest.approx(-sum(capped) / len(capped), rel=1e-5)
    with pytest.raises(UldError, match="option loss.cap expects a float, got 'abc'"):
        make_config(method="ga_last", loss={"cap": "abc"})
    cfg = make_config(method="ga_last", loss={"last_blocks": 1})
    policy = build_policy(tiny_llama(vocab_size=32), cfg, spec)  # 4 decoder layers
    trained = {n for n, p in policy.module.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("model.layers.3.") for n in trained)
