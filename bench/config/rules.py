"""The rules that both the config and a constructor check, each in one function.

The config checks them under the preset's key (``finetune.alpha``) and raises ``ConfigError``;
the losses and defenses that take the same values in code check them under their argument's
name and raise their own error class. One function per rule keeps the two from drifting apart.
Every message is one line: ``<key> = <value>: <the fix>``.
"""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError, ConfigError


def require(
    ok: bool, key: str, value: Any, fix: str, error: type[BenchError] = ConfigError
) -> None:
    """Raise ``error("<key> = <value>: <fix>")`` unless ``ok``."""
    if not ok:
        raise error(f"{key} = {value!r}: {fix}")


def check_alpha(alpha: float, key: str, error: type[BenchError] = ConfigError) -> None:
    """J_TS' weighs J_CE by 1 - alpha and J_IFM' by alpha (eq. 8); alpha lies in [0, 1)."""
    require(
        0 <= alpha < 1,
        key,
        alpha,
        "must lie in [0, 1): with alpha = 1 there is no J_CE, and J_IFM' has a zero "
        "gradient at the start (A = S), so A would never move",
        error,
    )


def check_ifm_weights(
    p: float, beta: float, gamma: float, key_prefix: str, error: type[BenchError] = ConfigError
) -> None:
    """p, beta and gamma of J_IFM' (eq. 7) are > 0."""
    for name, value in (("p", p), ("beta", beta), ("gamma", gamma)):
        require(
            value > 0, f"{key_prefix}{name}", value, "must be > 0 (eq. 7 takes them in R+)", error
        )


def check_thresholds(
    delta: float,
    delta_t: float | None,
    delta_s: float | None,
    key_prefix: str,
    error: type[BenchError] = ConfigError,
) -> None:
    """The thresholds of eq. 4: each in [-1, 1], delta_t and delta_s both or neither, and
    delta_t >= delta_s."""
    for name, value in (("delta", delta), ("delta_t", delta_t), ("delta_s", delta_s)):
        require(
            value is None or -1 <= value <= 1,
            f"{key_prefix}{name}",
            value,
            "d_AE lies in [-1, 1], so a threshold must too (the paper uses 0.1)",
            error,
        )
    require(
        (delta_t is None) == (delta_s is None),
        f"{key_prefix}delta_t",
        delta_t,
        "give both delta_t and delta_s, or neither (then delta is used)",
        error,
    )
    if delta_t is not None and delta_s is not None:
        # delta_t < delta_s would let one d_AE exceed delta_t and fall below delta_s at once
        require(
            delta_t >= delta_s,
            f"{key_prefix}delta_t",
            delta_t,
            f"must be >= {key_prefix}delta_s ({delta_s}), else an image suspects T and S at once",
            error,
        )


def check_tau(tau: float, key: str, error: type[BenchError] = ConfigError) -> None:
    """tau of the disagreement vote is a share of pixels: it lies in [0, 1]."""
    require(0 <= tau <= 1, key, tau, "is a share of pixels, so it must lie in [0, 1]", error)
