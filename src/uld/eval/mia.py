"""Membership inference on the forget set (members) against a holdout set (non-members).

Score direction, used everywhere here: **a higher score means "more likely a member"**.
Each attack's score is the negative of the usual loss-like statistic:

- LOSS:      s = -l, l the mean per-token NLL of the answer (Yeom et al. 2018);
- zlib:      s = -l / zlib(answer), zlib(answer) = length in bytes of the zlib-compressed answer
             text (Carlini et al. 2021);
- Min-K%:    s = mean of the lowest k-fraction of the answer's token log-probabilities
             (Shi et al. 2024), with max(1, floor(k·T)) tokens kept;
- Min-K%++:  the same over z_t = (log p(x_t) - mu_t) / sigma_t, mu_t and sigma_t^2 the mean and
             variance of log p(z) under z ~ p(· | x_<t) (Zhang et al. 2024); sigma^2 >= 1e-6.

AUC = P(s(member) > s(non-member)) + 1/2 P(tie) (Mann-Whitney): 1 when the forget set is easy to
tell from the holdout (remembered), 0.5 when indistinguishable (the retain model's situation),
below 0.5 when the forget set looks *less* familiar than unseen data (over-unlearning). This is
the convention of OpenUnlearning's `mia_*` AUCs ("auc is 1 when the forget data is much more
likely than the holdout data"), so the AUCs can be compared with theirs.

privleak (MUSE, Shi et al. 2024, as OpenUnlearning computes it from the AUC above):
    privleak = ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) * 100
AUC_ref is the retain model's AUC. Over-unlearning (AUC < AUC_ref) gives a positive value,
under-unlearning (AUC > AUC_ref, knowledge still detectable) a negative one; 0 is ideal.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from uld.eval.metrics import better

MIN_K = 0.4
ATTACKS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")


def _lowest_k_mean(values: np.ndarray, k: float) -> float:
    if values.size == 0:
        raise ValueError("an answer with no scored token has no Min-K% score")
    n = max(1, int(values.size * k))
    return float(np.sort(values)[:n].mean())


def loss_score(nll: float) -> float:
    """LOSS attack score, higher = member: -l."""
    return -float(nll)


def zlib_score(nll: float, text: str) -> float:
    """zlib attack score, higher = member: -l / len(zlib.compress(text))."""
    return -float(nll) / max(1, len(zlib.compress(text.encode("utf-8"))))


def min_k_score(token_logprob: Sequence[float] | np.ndarray, k: float = MIN_K) -> float:
    """Min-K% score, higher = member: mean of the lowest k-fraction of token log-probs (T,)."""
    return _lowest_k_mean(np.asarray(token_logprob, dtype=np.float64), k)


def min_k_plus_plus_score(
    token_logprob: Sequence[float] | np.ndarray,
    mu: Sequence[float] | np.ndarray,
    sigma2: Sequence[float] | np.ndarray,
    k: float = MIN_K,
) -> float:
    """Min-K%++ score, higher = member. All inputs (T,): token log-prob, E_p[log p], Var_p[log p]."""
    lp = np.asarray(token_logprob, dtype=np.float64)
    z = (lp - np.asarray(mu, dtype=np.float64)) / np.sqrt(np.maximum(np.asarray(sigma2, dtype=np.float64), 1e-6))
    return _lowest_k_mean(z, k)


@better("closer_to_half")
def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """P(s_member > s_nonmember) + 0.5 P(tie) over all pairs (the ROC AUC), from average ranks."""
    from scipy.stats import rankdata

    m = np.asarray(member_scores, dtype=np.float64)
    n = np.asarray(nonmember_scores, dtype=np.float64)
    if m.size == 0 or n.size == 0:
        raise ValueError("an AUC needs at least one member and one non-member score")
    ranks = rankdata(np.concatenate([m, n]))
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2.0
    return float(u / (m.size * n.size))


@better("closer_to_zero")
def privleak(auc_model: float, auc_reference: float) -> float:
    """((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) * 100; positive = over-unlearning."""
    if not 0.0 <= auc_reference < 1.0:
        raise ValueError(f"privleak needs a reference AUC in [0, 1), got {auc_reference}")
    return ((1.0 - auc_model) - (1.0 - auc_reference)) / (1.0 - auc_reference) * 100.0


def reference_score(nll_model: float, nll_reference: float) -> float:
    """Reference-model attack score in OpenUnlearning's sign (lower = member): l_model - l_ref,
    the model's loss calibrated by a reference model's loss on the same text (Carlini et al.
    2021's reference attack; OpenUnlearning's `mia_reference`)."""
    return float(nll_model) - float(nll_reference)
