"""Finetuning of the adaptive student A with J_TS' (eq. 8)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from bench.config import OPTIMIZERS, FinetuneConfig
from bench.data import CityscapesSegmentation
from bench.errors import BenchError, ConfigError
from bench.models import ERFNet
from defenses.adaptive import OPTIMIZER_CLASSES, AdaptiveTrainer, finetune_adaptive
from defenses.losses import feature_distance, soft_cross_entropy


def _images(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 64), generator=g, dtype=torch.uint8)


def _teacher_student() -> tuple[ERFNet, ERFNet]:
    """S: an untrained ERFNet(width=1) with sharpened outputs (x30, so that they depend on its
    features); T: S with a different class bias, so that J_CE has somewhere to pull A."""
    torch.manual_seed(0)
    s = ERFNet(width=1).eval()
    with torch.no_grad():
        s.decoder.output_conv.weight.mul_(30)
    t = copy.deepcopy(s)
    with torch.no_grad():
        t.decoder.output_conv.bias.add_(torch.randn(19, generator=torch.Generator().manual_seed(2)))
    return t, s


def _kl(teacher, model, x) -> float:
    """KL(y_T || y_model) = J_CE(T, model) - J_CE(T, T), averaged over pixels."""
    with torch.no_grad():
        logits_t = teacher(x)
        entropy_t = soft_cross_entropy(logits_t, logits_t)
        return (soft_cross_entropy(logits_t, model(x)) - entropy_t).item()


def _down2_distance(a, s, x) -> float:
    with torch.no_grad():
        _, feats_a = a.forward_taps(x, ["down2"])
        _, feats_s = s.forward_taps(x, ["down2"])
        return feature_distance(feats_a, feats_s).mean().item()


def test_a_equals_s_before_finetuning():
    t, s = _teacher_student()
    a = finetune_adaptive(t, s, TensorDataset(_images()), FinetuneConfig(epochs=0), progress=False)
    assert a is not s and not a.training
    for (name, pa), ps in zip(a.state_dict().items(), s.state_dict().values()):
        assert torch.equal(pa, ps), name


def test_first_step_sees_a_equal_to_s_at_every_tap():
    # frozen BatchNorm statistics and no dropout: A's features equal S's until the weights move,
    # so J_IFM' starts at exactly 1 / beta even over all taps (dropout sits inside `rest`)
    t, s = _teacher_student()
    trainer = AdaptiveTrainer(t, s, copy.deepcopy(s), FinetuneConfig(layers=("all",)))
    assert trainer.step(_images())["ifm"] == pytest.approx(2.0, abs=1e-6)


def test_ifm_on_down2_pushes_features_apart_while_ce_pulls_towards_t():
    t, s = _teacher_student()
    x = _images()
    runs = {}
    for alpha in (0.0, 0.6):
        a = copy.deepcopy(s)
        trainer = AdaptiveTrainer(t, s, a, FinetuneConfig(layers=("down2",), alpha=alpha, lr=1e-3))
        for _ in range(5):
            trainer.step(x)
        runs[alpha] = a
    # J_IFM' moves A's down2 features away from S's much further than J_CE alone does ...
    assert _down2_distance(runs[0.6], s, x) > 1.5 * _down2_distance(runs[0.0], s, x)
    # ... while J_CE still brings A's output closer to T's than S's output is
    assert _kl(t, runs[0.6], x) < _kl(t, s, x) - 0.005


def test_static_networks_stay_frozen_and_finetuning_is_reproducible():
    t, s = _teacher_student()
    before = {k: copy.deepcopy(m.state_dict()) for k, m in (("T", t), ("S", s))}
    config = FinetuneConfig(epochs=1, batch_size=2, lr=1e-3)
    a1 = finetune_adaptive(t, s, TensorDataset(_images()), config, seed=5, progress=False)
    a2 = finetune_adaptive(t, s, TensorDataset(_images()), config, seed=5, progress=False)
    for name, model in (("T", t), ("S", s)):
        assert not model.training
        assert all(p.grad is None for p in model.parameters()), name
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[name][key]), (name, key)
    assert any(not torch.equal(p, q) for p, q in zip(a1.parameters(), s.parameters()))
    for p1, p2 in zip(a1.parameters(), a2.parameters()):
        assert torch.equal(p1, p2)
    # BatchNorm running statistics stay S's
    for (key, v_a), v_s in zip(a1.state_dict().items(), s.state_dict().values()):
        if "running" in key:
            assert torch.equal(v_a, v_s), key


class _LabelledSplit(Dataset):
    with_labels = True

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise AssertionError("no item may be read")


def test_labelled_split_is_refused_before_reading():
    t, s = _teacher_student()
    with pytest.raises(ConfigError, match="with_labels=False"):
        finetune_adaptive(t, s, _LabelledSplit(), FinetuneConfig(), progress=False)


@pytest.mark.parametrize(
    "config, name",
    [
        (FinetuneConfig(), "A_down2_a0.6_e10"),
        (FinetuneConfig(layers=("all",)), "A_all_a0.6_e10"),
        (FinetuneConfig(layers=("down1", "down2"), alpha=0.7, epochs=3), "A_down1+down2_a0.7_e3"),
        (FinetuneConfig(layers=("rest",), beta=0.25, optimizer="sgd"), "A_rest_a0.6_e10_b0.25_sgd"),
        (FinetuneConfig(p=2, lr=1e-3, batch_size=4), "A_down2_a0.6_e10_p2_bs4_lr0.001"),
    ],
    ids=["paper", "baseline-6", "layers-alpha-epochs", "beta-optimizer", "p-bs-lr"],
)
def test_checkpoint_name_spells_the_settings(config, name):
    assert config.checkpoint_name == name


@pytest.mark.parametrize(
    "config, message",
    [
        (
            FinetuneConfig(layers=("down4",)),
            "unknown layer 'down4' for ERFNet; choose from down1, down2, down3, up1, up2",
        ),
        (FinetuneConfig(layers=()), "name at least one IFM layer"),
        (FinetuneConfig(alpha=1.0), r"alpha = 1.0: must lie in \[0, 1\)"),
        (FinetuneConfig(beta=0.0), "beta = 0.0: must be > 0"),
        (FinetuneConfig(optimizer="lbfgs"), "optimizer = 'lbfgs': choose from adam, adamw, sgd"),
    ],
    ids=["layer", "no-layers", "alpha", "beta", "optimizer"],
)
def test_bad_settings_are_named(config, message):
    t, s = _teacher_student()
    with pytest.raises(BenchError, match=message):
        AdaptiveTrainer(t, s, copy.deepcopy(s), config)


def test_every_optimizer_the_config_accepts_is_built():
    assert tuple(OPTIMIZER_CLASSES) == OPTIMIZERS


def test_finetunes_on_the_unlabelled_toy_split_without_its_labels(toy_root, tmp_path):
    # only the images of train_extra are copied: finetuning cannot read a label that is not there
    images = Path("leftImg8bit") / "train_extra"
    shutil.copytree(toy_root / images, tmp_path / images)
    unlabeled = CityscapesSegmentation(tmp_path, "train_extra", size=(32, 64), with_labels=False)
    t, s = _teacher_student()
    a = finetune_adaptive(t, s, unlabeled, FinetuneConfig(epochs=1, batch_size=3), progress=False)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), s.parameters()))
