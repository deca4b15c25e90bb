"""The gradient-free attack (Square-style random search): its schedule, that it attacks with
forward passes only, within its budget and eps, and reproducibly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import APGD, Square, build_attack
from attacks.objectives import Ensemble, ce_loss, pixel_accuracy, summed_loss
from attacks.square import window_share, window_side
from bench.errors import AttackError


def test_the_window_schedule_by_hand():
    # Square's schedule on 10,000 queries, rescaled: with 100 queries query 1 is "100 of 10,000"
    assert window_share(0.8, 0, 100) == 0.8
    assert window_share(0.8, 1, 100) == 0.8 / 4  # 100 in (50, 200]
    assert window_share(0.8, 5, 100) == 0.8 / 8  # 500 in (200, 500]
    assert window_share(0.8, 99, 100) == 0.8 / 512  # 9900 > 8000
    assert window_share(0.8, 10, 10_000) == 0.8  # "10 < it" halves only after 10
    assert window_share(0.8, 11, 10_000) == 0.4
    # sqrt(0.8 * 32 * 64) = 40.5 -> 40, but never more than the shorter side; never below 1
    assert window_side(0.8, 32, 64) == 32
    assert window_side(0.1, 32, 64) == round((0.1 * 32 * 64) ** 0.5) == 14
    assert window_side(1e-6, 32, 64) == 1


class Counting(nn.Module):
    """A network that counts its forward calls."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _judged(model, images, labels) -> tuple[float, float]:
    """(mean CE over labelled pixels, pixel accuracy of the attacked system), image means."""
    with torch.no_grad():
        outputs = model(images.float())
        loss = summed_loss(ce_loss, outputs, labels).mean()
        return float(loss), float(pixel_accuracy(model, outputs, labels).mean())


def test_square_raises_the_loss_and_lowers_the_accuracy_within_eps(reference):
    net, images, labels = reference[1], reference[2], reference[3]
    adv = Square(queries=30)(net, images, eps=8, labels=labels)
    assert adv.dtype == torch.uint8 and adv.shape == images.shape
    assert (adv.int() - images.int()).abs().max() <= 8
    clean_loss, clean_accuracy = _judged(net, images, labels)
    noise = torch.randint(-8, 9, images.shape, generator=torch.Generator().manual_seed(0))
    noisy = (images.int() + noise).clamp(0, 255).to(torch.uint8)
    _, noise_accuracy = _judged(net, noisy, labels)
    adv_loss, adv_accuracy = _judged(net, adv, labels)
    assert adv_loss > clean_loss
    assert adv_accuracy < min(clean_accuracy, noise_accuracy) - 0.05


def test_square_spends_exactly_its_queries_and_is_deterministic(reference):
    net, images, labels = reference[1], reference[2], reference[3]
    counting = Counting(net)
    first = Square(queries=17, seed=3)(counting, images, eps=4, labels=labels)
    assert counting.calls == 17  # one batched forward pass per query: 17 per image
    again = Square(queries=17, seed=3)(net, images, eps=4, labels=labels)
    assert torch.equal(first, again)
    other = Square(queries=17, seed=4)(net, images, eps=4, labels=labels)
    assert not torch.equal(first, other)


def test_square_does_not_depend_on_the_batch(reference):
    net, images, labels = reference[1], reference[2][:3], reference[3][:3]
    attack = Square(queries=8)
    together = attack(net, images, eps=4, labels=labels)
    alone = torch.cat(
        [
            attack(net, images[i : i + 1], eps=4, labels=labels[i : i + 1], index=torch.tensor([i]))
            for i in range(3)
        ]
    )
    assert torch.equal(together, alone)


def _quantize(x):
    """A quantizer to 8 gray levels: its gradient is zero everywhere (no stand-in)."""
    return (x / 32).round() * 32


def test_square_moves_a_surface_without_gradient_where_apgd_cannot(reference):
    net, images, labels = reference[1], reference[2], reference[3]
    masked = Ensemble({"S": net}, transform=_quantize)
    x = images.float().requires_grad_(True)
    (grad,) = torch.autograd.grad(summed_loss(ce_loss, masked(x), labels).sum(), x)
    assert not grad.any()  # nothing for a gradient attack to follow
    _, clean_accuracy = _judged(masked, images, labels)
    apgd = APGD(n_iter=10)(masked, images, eps=8, labels=labels)
    square = Square(queries=30)(masked, images, eps=8, labels=labels)
    assert (square.int() - images.int()).abs().max() <= 8
    _, apgd_accuracy = _judged(masked, apgd, labels)
    _, square_accuracy = _judged(masked, square, labels)
    assert square_accuracy < min(clean_accuracy, apgd_accuracy) - 0.05


def test_eps_below_one_gray_value_leaves_the_images():
    net = nn.Conv2d(3, 19, 1)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 19, (2, 8, 8))
    assert torch.equal(Square(queries=5)(net, images, eps=0.5, labels=labels), images)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"queries": 0}, "queries must be an integer >= 1"), ({"p_init": 0}, "p_init must lie")],
)
def test_bad_options_are_one_line(options, match):
    with pytest.raises(AttackError, match=match):
        build_attack("square", **options)


def test_square_needs_no_gradient_and_names_its_options():
    attack = build_attack("square", queries=100)
    assert not attack.needs_gradient and APGD.needs_gradient
    assert attack.params() == {"queries": 100, "p_init": 0.8, "seed": 0}
