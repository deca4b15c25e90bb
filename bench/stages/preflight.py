"""The pre-run checks: what the registries decide about a config, checked before any work
(``bench.config`` checks the rest when the config is built).

Building the networks on PyTorch's ``meta`` device allocates nothing, so even the Cityscapes
preset's ResNet-50 teacher is checked in milliseconds.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from attacks import ATTACK_NAMES, attack_class, build_attack
from bench import dist
from bench.config import DefenseSpec, RunConfig, adaptive_students
from bench.data.toycity import SceneStyle
from bench.errors import AttackError, ConfigError, DefenseError, ModelError
from bench.models import build_model, check_output
from bench.models.taps import expand_taps
from bench.plugins import is_spec
from bench.stages.defense_rows import OFFERED
from defenses import defense_name, is_plugin, load_defense, networks_needed
from defenses.registry import ROLE_OPTIONS


def check_run(config: RunConfig, device: torch.device | None = None) -> None:
    """Raise a one-line ``BenchError`` for the first setting no registry accepts, or that the
    processes of a torchrun launch cannot run on ``device``."""
    _check_processes(config, device)
    for role in ("teacher", "student"):
        model = _check_network(config, role)
    layer_lists = [("finetune.layers", config.finetune.layers)]
    layer_lists += [
        ("sweep.layer_sets", [p.strip() for p in ls.split(",")]) for ls in config.sweep.layer_sets
    ]
    if config.sweep.alphas:
        layer_lists += [("sweep.alpha_layers", [layer]) for layer in config.sweep.alpha_layers]
    if config.sweep.baseline:
        layer_lists.append(("sweep.baseline", ["all"]))
    for key, layers in layer_lists:
        try:
            expand_taps(model, layers)
        except ModelError as err:
            raise ConfigError(f"{key}: {err}") from err
    if config.data.toycity:
        SceneStyle.from_dict(config.data.toycity_style)
    for i, spec in enumerate(config.attack.suite):
        options = dict(spec.options)
        if options.get("loss") == "balanced-masked-ce":
            options.setdefault("class_weights", [1.0] * 19)  # computed from the data by the run
        try:
            build_attack(spec.name, **options)
        except AttackError as err:
            raise ConfigError(f"attack.suite[{i}] ({spec.tag}): {err}") from err
    _check_gradient_free(config)
    for defense in config.evaluate.defenses:
        _check_defense(defense)
    _check_defense_names(config)


def _check_gradient_free(config: RunConfig) -> None:
    """The gradient-free attack (when on) builds and needs no gradient: it is what attacks a
    surface whose gradient is masked."""
    gradient_free = config.attack.gradient_free
    if gradient_free.queries == 0:
        return
    try:
        if getattr(attack_class(gradient_free.name), "needs_gradient", True):
            free = [n for n in ATTACK_NAMES if not getattr(attack_class(n), "needs_gradient", True)]
            raise ConfigError(
                f"attack.gradient_free.name = {gradient_free.name!r} needs gradients; choose a "
                f"gradient-free attack: {', '.join(free)} (or set attack.gradient_free.queries = 0)"
            )
        build_attack(gradient_free.name, **gradient_free.spec.options)
    except AttackError as err:
        raise ConfigError(f"attack.gradient_free: {err}") from err


def _check_processes(config: RunConfig, device: torch.device | None) -> None:
    """Under torchrun the batch sizes are global batches that must divide among the
    processes, and SyncBatchNorm needs GPUs: checked now, not when training reaches them."""
    if dist.size() == 1:
        return
    dist.per_rank_batch(config.pretrain.batch_size, "pretrain.batch_size")
    dist.per_rank_batch(config.finetune.batch_size, "finetune.batch_size")
    if config.pretrain.sync_bn and device is not None and device.type != "cuda":
        raise ConfigError(
            f"pretrain.sync_bn = true needs GPUs (SyncBatchNorm), not --device {device}; "
            "set it false or run on cuda"
        )


def _check_network(config: RunConfig, role: str) -> nn.Module:
    """The network builds (a registered architecture on the ``meta`` device, instantly; a user's
    own on the CPU, and it must map gray values to 19-class logits of the input's size), and
    its weights and backbone files exist."""
    net = getattr(config, role)
    for key in ("weights", "backbone"):
        path = getattr(net, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"{role}.{key} = {path!r}: no such file; give a state_dict file")
    try:
        if is_spec(net.arch):
            model = build_model(net.arch, **net.options)
            check_output(model, tuple(config.data.size), f"{role}.arch {net.arch}")
        else:
            with torch.device("meta"):
                model = build_model(net.arch, **net.options)
    except ModelError as err:
        raise ConfigError(f"{role}: {err}") from err
    if hasattr(model, "check_size"):
        model.check_size(tuple(config.data.size))
    if net.backbone and not hasattr(model, "backbone"):
        raise ConfigError(
            f"{role}.backbone: {net.arch} has no ResNet backbone to seed; use deeplabv3plus"
        )
    return model


def _check_defense(defense: DefenseSpec) -> None:
    """The defense loads, can be called as ``Class(networks, **offered, **its options)`` and,
    when it is a class, has a ``predict`` method: what can be known without building it (its
    constructor's own refusal of a value comes when the run builds it, as one line too)."""
    spec = defense.spec
    factory = load_defense(spec)
    fixed = sorted(set(ROLE_OPTIONS) & set(defense.options))
    if not is_plugin(spec) and fixed:
        raise DefenseError(
            f"defense {spec!r}: option {fixed[0]!r} is what the built-in's name fixes (which "
            "networks it reads); name the built-in that has the value you want instead, e.g. "
            "TAT-vote for the vote with AT in A's place"
        )
    try:
        parameters = inspect.signature(factory).parameters
        options = {name: None for name in OFFERED if name in parameters} | defense.options
        inspect.signature(factory).bind({}, **options)
    except (TypeError, ValueError) as err:
        given = f" with options {defense.options}" if defense.options else ""
        raise DefenseError(
            f"defense {spec!r} cannot be built as Class(networks, **options){given}: {err}; "
            "fix the options in evaluate.defenses (or --defense)"
        ) from err
    networks_needed(spec)  # a plug-in's ``needs`` names known roles
    if isinstance(factory, type) and not callable(getattr(factory, "predict", None)):
        raise DefenseError(
            f"defense {spec!r}: {factory.__name__} has no predict(images) method "
            "(see defenses/base.py)"
        )


def _check_defense_names(config: RunConfig) -> None:
    """No two rows of the results share a name: the built-ins' names are their specs, a
    plug-in's is its class's ``name`` attribute (one its constructor sets is checked when the
    defenses are built), the sweeps' extra students are named by their settings."""
    rows = {row: "the sweep's adaptive student" for row, _ in adaptive_students(config).all()[1:]}
    for defense in config.evaluate.defenses:
        name = defense.name or defense_name(defense.spec)
        if name is None:
            continue
        if name in rows:
            raise DefenseError(
                f"evaluate.defenses: {defense.label()} and {rows[name]} are both named {name!r} "
                "(their result rows would collide); give one of them a row name of its own: "
                f'{{spec = "{defense.spec}", options = {{...}}, name = "{name}-2"}}'
            )
        rows[name] = defense.label()
