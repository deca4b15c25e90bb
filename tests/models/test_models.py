"""ERFNet and the DeepLabv3+ teacher: shapes, parameter counts, taps, official checkpoint layout."""

from __future__ import annotations

import pytest
import torch

from bench.errors import ModelError
from bench.models import (
    DeepLabV3Plus,
    ERFNet,
    build_model,
    check_output,
    count_parameters,
    load_weights,
)

# Published facts about erfnet_pytorch (Romera et al.): module names and shapes of a few keys of
# its 20-class checkpoints (19 classes + void), written as DataParallel saved them.
OFFICIAL_KEYS = {
    "module.encoder.initial_block.conv.weight": (13, 3, 3, 3),
    "module.encoder.initial_block.bn.running_mean": (16,),
    "module.encoder.layers.0.conv.weight": (48, 16, 3, 3),
    "module.encoder.layers.1.conv3x1_1.weight": (64, 64, 3, 1),
    "module.encoder.layers.6.conv.weight": (64, 64, 3, 3),
    "module.encoder.layers.14.conv1x3_2.weight": (128, 128, 1, 3),
    "module.encoder.output_conv.weight": (20, 128, 1, 1),
    "module.decoder.layers.0.conv.weight": (128, 64, 3, 3),
    "module.decoder.layers.3.conv.weight": (64, 16, 3, 3),
    "module.decoder.layers.5.bn2.num_batches_tracked": (),
    "module.decoder.output_conv.weight": (16, 20, 2, 2),
    "module.decoder.output_conv.bias": (20,),
}


def test_erfnet_is_the_real_network():
    model = ERFNet(num_classes=19)
    assert 2.0e6 < count_parameters(model) < 2.1e6
    logits = model(torch.rand(2, 3, 64, 128) * 255)
    assert logits.shape == (2, 19, 64, 128)


def test_official_20_class_checkpoint_layout_loads():
    torch.manual_seed(0)
    source = ERFNet(num_classes=20)
    official = {f"module.{k}": v for k, v in source.state_dict().items()}
    for key, shape in OFFICIAL_KEYS.items():
        assert tuple(official[key].shape) == shape, key
    model = ERFNet(num_classes=19)
    load_weights(model, official, "official")
    x = torch.rand(1, 3, 32, 64) * 255
    source.eval(), model.eval()
    assert torch.allclose(model(x), source(x)[:, :19], atol=1e-5)


def test_taps_come_from_the_same_forward_pass():
    model = ERFNet(width=1).eval()
    x = torch.rand(2, 3, 32, 64) * 255
    logits, feats = model.forward_taps(x, ["down2", "up"])
    assert list(feats) == ["down2", "up1", "up2"]
    assert feats["down2"].shape[-2:] == (8, 16) and feats["up2"].shape[-2:] == (16, 32)
    assert torch.equal(logits, model(x))
    assert len(model.expand_taps(["all"])) == 5 + len(ERFNet.TAP_GROUPS["rest"])
    assert "decoder.output_conv" not in ERFNet.TAPS.values()  # the classifier is never a tap
    feats["down2"].sum().backward()  # gradients flow through the tapped features
    stem = model.encoder.initial_block.conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert model.decoder.output_conv.weight.grad is None  # beyond down2: untouched


def test_unknown_tap_names_the_choices():
    with pytest.raises(ModelError, match=r"unknown layer 'down4'.*down1, down2, down3, up1, up2"):
        ERFNet.expand_taps(["down4"])


def test_bad_input_size_is_a_clear_error_that_proposes_a_size():
    with pytest.raises(ModelError, match=r"divisible by 8, got 30x58; use e\.g\. 32x56"):
        ERFNet(width=1)(torch.zeros(1, 3, 30, 58))
    with pytest.raises(ModelError, match=r"divisible by 16, got 44x64; use e\.g\. 48x64"):
        DeepLabV3Plus.check_size((44, 64))


@pytest.mark.parametrize("depth", [18, 50])
def test_teacher_shapes_and_size(depth):
    model = DeepLabV3Plus(depth=depth, width=8, aspp_channels=16, aspp_rates=(1, 2)).eval()
    assert model(torch.rand(1, 3, 32, 64) * 255).shape == (1, 19, 32, 64)
    full = DeepLabV3Plus(depth=depth)
    assert count_parameters(full) > 5 * count_parameters(ERFNet())  # the "non-efficient" teacher


def test_registry_errors_list_the_choices():
    with pytest.raises(ModelError, match="choose from erfnet, deeplabv3plus"):
        build_model("unet")
    with pytest.raises(ModelError, match="bad options for erfnet"):
        build_model("erfnet", depth=3)


@pytest.mark.parametrize("pool_norm", ["none", "group"])
def test_deeplab_trains_a_step_at_batch_size_one(pool_norm):
    model = DeepLabV3Plus(
        depth=18, width=8, aspp_channels=16, aspp_rates=(1, 2), pool_norm=pool_norm
    )
    model.train()
    loss = model(torch.rand(1, 3, 32, 64) * 255).logsumexp(1).mean()
    loss.backward()
    assert model.aspp.image_pool[1][0].weight.grad is not None


def test_the_original_pooling_branch_cannot_train_on_one_image():
    model = DeepLabV3Plus(depth=18, width=8, aspp_channels=16, aspp_rates=(1, 2), pool_norm="batch")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.train()(torch.rand(1, 3, 32, 64) * 255)
    with pytest.raises(ModelError, match="pool_norm must be one of none, group, batch"):
        build_model("deeplabv3plus", pool_norm="layer")


class _Uniform(torch.nn.Module):
    """A brought-in network without parameters (every class equally likely)."""

    def forward(self, x):
        return torch.zeros(x.shape[0], 19, *x.shape[2:])


def test_a_network_without_parameters_passes_the_output_check():
    check_output(_Uniform(), (8, 16), "student.arch mine.py:build")  # no StopIteration
    with pytest.raises(ModelError, match="must return logits"):
        check_output(torch.nn.Flatten(), (8, 16), "student.arch mine.py:build")
