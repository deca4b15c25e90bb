"""What the registries decide about a config, checked before any work (``bench.config``
checks the rest when the config is built).

Building the networks on PyTorch's ``meta`` device allocates nothing, so even the Cityscapes
preset's ResNet-50 teacher is checked in milliseconds.
"""

from __future__ import annotations

import torch

from attacks import build_attack
from bench.config import RunConfig, adaptive_students
from bench.data.toycity import SceneStyle
from bench.errors import ConfigError, ModelError
from bench.models import build_model
from defenses import load_defense


def check_run(config: RunConfig) -> None:
    """Raise a one-line ``BenchError`` for the first setting no registry accepts."""
    with torch.device("meta"):
        for role in ("teacher", "student"):
            net = getattr(config, role)
            try:
                model = build_model(net.arch, **net.options)
            except ModelError as err:
                raise ConfigError(f"{role}: {err}") from None
            if hasattr(model, "check_size"):
                model.check_size(tuple(config.data.size))
    student = type(model)
    if not hasattr(student, "expand_taps"):
        raise ConfigError(
            f"student.arch {config.student.arch!r} has no named feature taps; IFM' needs them"
        )
    for _, settings in adaptive_students(config).all():
        student.expand_taps(settings.layers)
    if config.data.toycity:
        SceneStyle.from_dict(config.data.toycity_style)
    for spec in config.attack.suite:
        options = dict(spec.options)
        if options.get("loss") == "balanced-masked-ce":
            options.setdefault("class_weights", [1.0] * 19)  # computed from the data by the run
        build_attack(spec.name, **options)
    for spec in config.evaluate.defenses:
        load_defense(spec)
