"""The qualitative grid of a run: one test image, clean and attacked, with the label maps of
T, S, A and the T/A vote (the paper's qualitative figure), kept in ``<run>/cache``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench import __version__
from bench.errors import RunDirError
from bench.keys import cache_key
from bench.stages.ae_sets import PlannedSet
from bench.stages.context import RunContext
from bench.store.aesets import AESet
from bench.store.rundir import QUALITATIVE_FILE, read_arrays, write_arrays
from bench.variants import TRANSFER
from defenses import build_defense, predict_labels


def qualitative_grid(ctx: RunContext, ae_sets: Sequence[tuple[PlannedSet, AESet]]) -> Path:
    """The first test image, clean and as every transfer source's AE at the largest eps of the
    paper's attack, with the maps of T, S, A and the T/A vote: ``<run>/cache/qualitative.npz``,
    rebuilt when what it shows changes (its key is stored inside) and written atomically."""
    config, networks = ctx.config, ctx.require_networks()
    subset = config.data.test_subset
    if subset not in config.attack.subsets:
        subset = config.attack.subsets[0]
    transfer = [
        (p, s)
        for p, s in ae_sets
        if p.spec.subset == subset
        and p.spec.threat == TRANSFER
        and p.spec.attack == config.attack.paper_attack
    ]
    top = max((p.spec.eps for p, _ in transfer), default=0.0)
    shown = {p.spec.source: s for p, s in transfer if p.spec.eps == top}
    roles = [r for r in ("T", "S", "A") if r in networks.memos]  # A only when a defense reads it
    weights = {networks.checkpoints[r]: networks.sha256[r] for r in roles}
    images = ctx.data.split(subset)
    key = cache_key(
        weights,
        images.fingerprint(),
        {s: a.attrs for s, a in shown.items()},
        config.detect,
        __version__,
    )
    path = ctx.run.cache / QUALITATIVE_FILE
    if path.is_file():
        try:
            if str(read_arrays(path).get("__key__")) == key:
                return path
        except RunDirError:
            pass  # damaged (a kill mid-write with an old version): rebuilt below
    image, label = images[0]
    memos = networks.memos
    vote = (
        build_defense(
            "TA-vote",
            memos,
            delta=config.detect.delta,
            delta_t=config.detect.delta_t,
            delta_s=config.detect.delta_s,
        )
        if "A" in memos
        else None
    )
    rows = [("clean", image[None])] + [
        (f"{source}-AE eps {top:g}", next(ae_set.batches(1))) for source, ae_set in shown.items()
    ]
    grid: dict[str, np.ndarray] = {"__key__": np.array(key)}
    for row, batch in rows:
        grid[f"{row}|image"] = batch[0].numpy()
        grid[f"{row}|ground truth"] = label.numpy()
        for net in roles:
            grid[f"{row}|{net}"] = predict_labels(memos[net], batch)[0].numpy()
        if vote is not None:
            grid[f"{row}|T/A vote"] = vote.predict(batch).labels[0].numpy()
    write_arrays(path, grid)
    return path
