"""What the registries decide about a config, checked before any work (``bench.config``
checks the rest when the config is built).

Building the networks on PyTorch's ``meta`` device allocates nothing, so even the Cityscapes
preset's ResNet-50 teacher is checked in milliseconds.
"""

from __future__ import annotations

import inspect

import torch

from attacks import build_attack
from bench.config import RunConfig
from bench.data.toycity import SceneStyle
from bench.errors import ConfigError, DefenseError, ModelError
from bench.models import build_model
from bench.stages.defenses import OFFERED
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
    layer_lists = [("finetune.layers", config.finetune.layers)]
    layer_lists += [
        ("sweep.layer_sets", [p.strip() for p in ls.split(",")]) for ls in config.sweep.layer_sets
    ]
    layer_lists += [("sweep.alpha_layers", [layer]) for layer in config.sweep.alpha_layers]
    for key, layers in layer_lists:
        try:
            student.expand_taps(layers)
        except ModelError as err:
            raise ConfigError(f"{key}: {err}") from None
    if config.data.toycity:
        SceneStyle.from_dict(config.data.toycity_style)
    for spec in config.attack.suite:
        options = dict(spec.options)
        if options.get("loss") == "balanced-masked-ce":
            options.setdefault("class_weights", [1.0] * 19)  # computed from the data by the run
        build_attack(spec.name, **options)
    for spec in config.evaluate.defenses:
        _check_defense(spec)


def _check_defense(spec: str) -> None:
    """The defense loads, can be called as ``Class(networks, **offered options)`` and, when it
    is a class, has a ``predict`` method: what can be known without building it."""
    factory = load_defense(spec)
    try:
        parameters = inspect.signature(factory).parameters
        options = {name: None for name in OFFERED if name in parameters}
        inspect.signature(factory).bind({}, **options)
    except (TypeError, ValueError) as err:
        raise DefenseError(
            f"defense {spec!r} cannot be built as Class(networks, **options): {err}"
        ) from None
    if isinstance(factory, type) and not callable(getattr(factory, "predict", None)):
        raise DefenseError(
            f"defense {spec!r}: {factory.__name__} has no predict(images) method "
            "(see defenses/base.py)"
        )
