"""Defenses: the protocol, the built-ins and the loading of users' plug-ins.

    from defenses import build_defense
    defense = build_defense("TA-vote", networks, delta=0.1)
    prediction = defense.predict(images)              # labels (N, H, W) + one record per image

See ``defenses.base`` for the contract a plug-in fulfils and ``defenses.registry`` for names.
``DefenseBase`` is an optional convenience for a plug-in (the built-ins use it): subclass it and
write ``_predict(images)``; its final ``predict`` checks the images first. A plug-in that
defines ``name`` and ``predict`` itself, without it, is just as valid.
"""

from bench.errors import DefenseError
from defenses.adaptive import AdaptiveTrainer, finetune_adaptive
from defenses.base import (
    AttackSurface,
    Defense,
    DefenseBase,
    Networks,
    Prediction,
    Record,
    attack_surface,
    check_images,
    predict_labels,
    require_networks,
)
from defenses.losses import ifm_loss, soft_cross_entropy, ts_loss
from defenses.preprocess import InputTransform
from defenses.registry import (
    BUILTIN_NEEDS,
    BUILTINS,
    ENTRY_POINT_GROUP,
    available_defenses,
    build_defense,
    defense_name,
    is_plugin,
    load_defense,
    networks_needed,
)
from defenses.single import SingleNetwork
from defenses.vote import DisagreementVote, Vote, d_ae, hamming

__all__ = [
    "BUILTINS",
    "BUILTIN_NEEDS",
    "ENTRY_POINT_GROUP",
    "AdaptiveTrainer",
    "AttackSurface",
    "Defense",
    "DefenseBase",
    "DefenseError",
    "DisagreementVote",
    "InputTransform",
    "Networks",
    "Prediction",
    "Record",
    "SingleNetwork",
    "Vote",
    "attack_surface",
    "available_defenses",
    "build_defense",
    "check_images",
    "d_ae",
    "defense_name",
    "finetune_adaptive",
    "hamming",
    "ifm_loss",
    "is_plugin",
    "load_defense",
    "networks_needed",
    "predict_labels",
    "require_networks",
    "soft_cross_entropy",
    "ts_loss",
]
