"""The rules that the config and a constructor both check (``bench.config.rules``): each one
refuses and accepts the same values through the config as through the constructor, with the
same message but for the key."""

from __future__ import annotations

import pytest
import torch

from bench.config import RunConfig, apply_values
from bench.errors import ConfigError, DefenseError, LossError
from defenses.losses import ifm_loss, ts_loss
from defenses.vote import DisagreementVote, Vote

NETWORKS = dict.fromkeys("TSA")  # the votes only keep them at construction


def _feats() -> dict[str, torch.Tensor]:
    return {"a": torch.zeros(1, 2, 2, 2)}


def _config_error(values: dict) -> str | None:
    """The config's message for ``values`` with its ``section.`` prefixes removed, or None."""
    try:
        apply_values(RunConfig(), values)
    except ConfigError as err:
        return str(err).replace("finetune.", "").replace("detect.", "")
    return None


def _constructor_error(build, error: type[Exception]) -> str | None:
    try:
        build()
    except error as err:
        return str(err)
    return None


def _ts_loss(alpha: float) -> None:
    logits = torch.zeros(1, 2, 2, 2)
    ts_loss(logits, logits, _feats(), _feats(), alpha=alpha)


@pytest.mark.parametrize(
    ("alpha", "refused"), [(1.0, True), (1.5, True), (-0.1, True), (0.0, False), (0.99, False)]
)
def test_alpha_lies_in_zero_to_one_for_the_config_and_ts_loss(alpha, refused):
    from_config = _config_error({"finetune.alpha": alpha})
    from_loss = _constructor_error(lambda: _ts_loss(alpha), LossError)
    assert from_config == from_loss
    assert (from_config is not None) == refused
    if refused:
        assert from_config.startswith(f"alpha = {alpha!r}: must lie in [0, 1)")


@pytest.mark.parametrize(("alpha", "refused"), [(1.0, True), (0.99, False)])
def test_the_alpha_sweep_follows_the_same_rule(alpha, refused):
    message = _config_error({"sweep.alphas": [alpha]})
    assert (message is not None) == refused
    if refused:
        assert message.startswith("sweep.alphas[0] = 1.0: must lie in [0, 1)")


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    [("p", 0.0, True), ("beta", -1.0, True), ("gamma", 0.0, True), ("p", 2.0, False)],
)
def test_ifm_weights_are_positive_for_the_config_and_ifm_loss(name, value, refused):
    from_config = _config_error({f"finetune.{name}": value})
    from_loss = _constructor_error(lambda: ifm_loss(_feats(), _feats(), **{name: value}), LossError)
    assert from_config == from_loss
    assert (from_config is not None) == refused


@pytest.mark.parametrize(
    ("thresholds", "fix"),
    [
        ({"delta": 1.5}, "delta = 1.5: d_AE lies in [-1, 1]"),
        ({"delta_s": -1.5, "delta_t": 0.0}, "delta_s = -1.5: d_AE lies in [-1, 1]"),
        ({"delta_t": 0.2}, "delta_t = 0.2: give both delta_t and delta_s"),
        ({"delta_t": -0.1, "delta_s": 0.1}, "delta_t = -0.1: must be >= delta_s (0.1)"),
        ({"delta": -1.0}, None),
        ({"delta_t": 0.2, "delta_s": -0.2}, None),
        ({"delta_t": 0.1, "delta_s": 0.1}, None),
    ],
)
def test_thresholds_follow_one_rule_in_the_config_and_the_vote(thresholds, fix):
    from_config = _config_error({f"detect.{k}": v for k, v in thresholds.items()})
    from_vote = _constructor_error(lambda: Vote(NETWORKS, **thresholds), DefenseError)
    assert from_config == from_vote
    if fix is None:
        assert from_config is None
    else:
        assert from_config.startswith(fix)


@pytest.mark.parametrize(
    ("tau", "refused"), [(1.5, True), (-0.1, True), (0.0, False), (1.0, False), (0.25, False)]
)
def test_tau_is_a_share_of_pixels_for_the_config_and_the_disagreement_vote(tau, refused):
    from_config = _config_error({"detect.tau": tau})
    from_vote = _constructor_error(lambda: DisagreementVote(NETWORKS, tau=tau), DefenseError)
    assert from_config == from_vote
    assert (from_config is not None) == refused
