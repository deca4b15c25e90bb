"""J_CE (eq. 1), J_IFM' (eqs. 2, 7) and J_TS' (eq. 8) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from defenses.losses import LossError, feature_distance, ifm_loss, soft_cross_entropy, ts_loss


def _feats() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Two images, two layers; differences A - S:
    image 0: layer a (1x1x2) [1, -3], layer b (2x1x1) [0.5, 0.5]
    image 1: layer a [0, 0],          layer b [2, -2]
    """
    s_a = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])  # (2, 1, 1, 2)
    s_b = torch.tensor([[[[0.0]], [[1.0]]], [[[5.0]], [[5.0]]]])  # (2, 2, 1, 1)
    d_a = torch.tensor([[[[1.0, -3.0]]], [[[0.0, 0.0]]]])
    d_b = torch.tensor([[[[0.5]], [[0.5]]], [[[2.0]], [[-2.0]]]])
    return {"a": s_a + d_a, "b": s_b + d_b}, {"a": s_a, "b": s_b}


def test_feature_distance_by_hand():
    fa, fs = _feats()
    # image 0: (|1| + |-3|) / 2 = 2 and (0.5 + 0.5) / 2 = 0.5 -> mean 1.25; image 1: 0 and 2 -> 1
    assert feature_distance(fa, fs).tolist() == [1.25, 1.0]


def test_ifm_defaults_by_hand_per_image_then_batch_mean():
    fa, fs = _feats()
    # (0.5 + 1.25)^-1 = 4/7 and (0.5 + 1)^-1 = 2/3, mean 13/21; the batch-as-a-whole reading
    # (0.5 + 1.125)^-1 = 0.6154 would differ.
    assert ifm_loss(fa, fs).item() == pytest.approx(13 / 21, rel=1e-6)


def test_ifm_p2_beta_gamma_by_hand():
    fa, fs = _feats()
    d0 = (math.sqrt(1 + 9) / 2 + math.sqrt(0.25 + 0.25) / 2) / 2
    d1 = (0 + math.sqrt(4 + 4) / 2) / 2
    expected = ((1 + d0) ** -2 + (1 + d1) ** -2) / 2
    assert ifm_loss(fa, fs, p=2, beta=1, gamma=2).item() == pytest.approx(expected, rel=1e-6)


def test_ifm_of_equal_features_is_one_over_beta_to_gamma():
    _, fs = _feats()
    assert ifm_loss(fs, fs, beta=0.5, gamma=1).item() == pytest.approx(2.0)
    assert ifm_loss(fs, fs, beta=0.25, gamma=2).item() == pytest.approx(16.0)


def test_soft_cross_entropy_by_hand():
    ln3 = math.log(3)
    # pixel 0: y_T = (1/2, 1/2), y_A = (1/4, 3/4); pixel 1: y_T = (1/4, 3/4), y_A = (1/2, 1/2)
    logits_t = torch.tensor([[[[0.0, 0.0]], [[0.0, ln3]]]])  # (1, 2, 1, 2)
    logits_a = torch.tensor([[[[0.0, 0.0]], [[ln3, 0.0]]]])
    expected = (0.5 * math.log(16 / 3) + math.log(2)) / 2
    assert soft_cross_entropy(logits_t, logits_a).item() == pytest.approx(expected, rel=1e-6)


def test_ts_loss_mixes_eq8():
    fa, fs = _feats()
    logits_t = torch.zeros(2, 19, 2, 2)
    logits_a = torch.zeros(2, 19, 2, 2)  # uniform vs uniform: J_CE = ln 19
    loss = ts_loss(logits_t, logits_a, fa, fs, alpha=0.6)
    assert loss.ce.item() == pytest.approx(math.log(19), rel=1e-6)
    assert loss.total.item() == pytest.approx(0.4 * math.log(19) + 0.6 * 13 / 21, rel=1e-6)


def test_ifm_gradient_pushes_features_apart():
    fa, fs = _feats()
    fa = {k: v.clone().requires_grad_(True) for k, v in fa.items()}
    ifm_loss(fa, fs).backward()
    # descending the loss moves f_A further from f_S wherever they differ
    diff = fa["a"].detach() - fs["a"]
    assert (fa["a"].grad * diff.sign()).sum() < 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda fa, fs: ifm_loss({}, {}), "at least one layer"),
        (lambda fa, fs: ifm_loss(fa, {"a": fs["a"]}), "layers differ"),
        (lambda fa, fs: ifm_loss(fa, fs, p=0), "p = 0: must be > 0"),
        (lambda fa, fs: ifm_loss(fa, fs, beta=-1), "beta = -1: must be > 0"),
        (lambda fa, fs: ifm_loss({"a": fa["a"]}, {"a": fs["b"]}), "share one architecture"),
        (
            lambda fa, fs: ts_loss(
                torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), fa, fs, alpha=2
            ),
            "alpha",
        ),
    ],
    ids=["empty", "keys", "p", "beta", "shape", "alpha"],
)
def test_loss_errors_name_the_problem(call, message):
    fa, fs = _feats()
    with pytest.raises(LossError, match=message):
        call(fa, fs)
