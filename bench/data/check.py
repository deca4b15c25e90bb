"""The data tree, checked before any work: what a run will read exists, is whole, has labels of
its images' sizes holding valid ids, and (for real Cityscapes) holds the images the paper used.

Reading an image's size costs its PNG header only, and whether it is whole its last kilobyte
(a truncated copy lacks the PNG's closing IEND chunk), so all of Cityscapes' 45,000 files are
checked in seconds, not after hours of training. Label values need the label decoded: every label
of the subsets a run evaluates (``complete``) is read, and ``LABEL_SAMPLE`` evenly spaced ones of
any other labelled split (the training split); the loader stops with one line on a bad value the
sample missed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data.cityscapes import CityscapesSegmentation, require_root
from bench.data.labels import describe_values, holds_train_ids, invalid_values, values_rule
from bench.errors import DataError

#: image counts of real Cityscapes (the paper's Section 4.1 for the mini subsets)
CITYSCAPES_COUNTS = {"mini_val": 59, "mini_test": 441, "train": 2975, "train_extra": 19998}
#: label files whose values are read per split checked on a sample (evenly spaced, in file order)
LABEL_SAMPLE = 20
_EXAMPLES = 3
#: the closing chunk of every PNG (length 0, type IEND, its CRC), and how far from the end of the
#: file it is looked for (a few tools append bytes after it; PIL ignores them)
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_TAIL = 1024


@dataclass
class TreeCheck:
    """The problems (the run cannot work) and warnings (it can, but not as the paper did)."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Header:
    """What a file's header and tail tell: its (W, H) size, or None when unreadable; whether a
    PNG lacks its end (truncated)."""

    size: tuple[int, int] | None
    truncated: bool = False


def _header(path: Path) -> _Header:
    try:
        with open(path, "rb") as handle:
            with Image.open(handle) as image:
                size, png = image.size, image.format == "PNG"
            if not png:
                return _Header(size)
            end = handle.seek(0, 2)
            handle.seek(max(0, end - _TAIL))
            return _Header(size, _PNG_END not in handle.read())
    except (OSError, UnidentifiedImageError):
        return _Header(None)


def _bad_values(path: Path) -> tuple[list[int], int] | None:
    """The values of a label file its kind may not hold and how many pixels hold them (decoded
    as the loader decodes it); None when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            counts = np.array((image if image.mode == "L" else image.convert("L")).histogram())
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    bad = invalid_values(
        np.flatnonzero(counts).astype(np.uint8), train_ids=holds_train_ids(path.name)
    )
    return bad, int(counts[bad].sum())


def _sample(count: int, size: int) -> list[int]:
    """``size`` evenly spaced indices of ``range(count)`` (all of them when fewer)."""
    if count <= size:
        return list(range(count))
    return sorted({round(i * (count - 1) / (size - 1)) for i in range(size)})


def check_tree(
    root: str | Path,
    reads: Sequence[tuple[str, bool]],
    *,
    real: bool = False,
    sampled: Collection[str] = (),
) -> TreeCheck:
    """Check every (split or subset, with labels) a run reads under ``root``.

    One problem per split and kind: a missing folder or city, images without labels, unreadable
    or truncated files, labels of another size than their images; and one per label file holding
    values outside its kind's (the first few files, then how many more). Label values are read
    for every label, except in the splits of ``sampled``: ``LABEL_SAMPLE`` evenly spaced files
    there. With ``real``, a warning per subset whose image count differs from real Cityscapes'.
    """
    result = TreeCheck()
    require_root(Path(root))
    for split, with_labels in dict(reads).items():
        try:
            data = CityscapesSegmentation(root, split, with_labels=with_labels)
        except DataError as err:
            result.problems.append(f"{split}: {err}")
            continue
        result.problems += _check_files(Path(root), split, data, sampled=split in sampled)
        expected = CITYSCAPES_COUNTS.get(split)
        if real and expected is not None and len(data) != expected:
            result.warnings.append(
                f"{split} holds {len(data)} images, real Cityscapes {expected}: numbers will not "
                "compare with the paper's"
            )
    return result


def _check_files(
    root: Path, split: str, data: CityscapesSegmentation, *, sampled: bool
) -> list[str]:
    """The problems of one split's files (see ``check_tree``)."""
    unreadable, truncated, mismatched, bad_values = [], [], [], []
    read_values = set(_sample(len(data), LABEL_SAMPLE)) if sampled else None
    for index, sample in enumerate(data.samples):
        image = _header(sample.image)
        label = _header(sample.label) if sample.label is not None else None
        for path, header in ((sample.image, image), (sample.label, label)):
            if header is not None and header.size is None:
                unreadable.append(str(path))
            elif header is not None and header.truncated:
                truncated.append(str(path))
        if label is None or image.size is None or label.size is None or label.truncated:
            continue
        if image.size != label.size:
            (w, h), (iw, ih) = label.size, image.size
            mismatched.append(f"{sample.label.name} is {h}x{w}, its image {ih}x{iw}")
        if read_values is not None and index not in read_values:
            continue
        found = _bad_values(sample.label)
        if found is None:
            unreadable.append(str(sample.label))
        elif found[0]:
            bad_values.append((sample.label, *found))
    problems = []
    if unreadable:
        problems.append(
            f"{split}: {len(unreadable)} unreadable files, e.g. {', '.join(unreadable[:_EXAMPLES])}"
        )
    if truncated:
        problems.append(
            f"{split}: {len(truncated)} truncated files (their PNG ends early), e.g. "
            f"{', '.join(truncated[:_EXAMPLES])}; copy or unzip them again"
        )
    if mismatched:
        problems.append(
            f"{split}: {len(mismatched)} labels differ in size from their images, e.g. "
            f"{'; '.join(mismatched[:_EXAMPLES])}; every label must have its image's size"
        )
    for path, values, pixels in bad_values[:_EXAMPLES]:
        problems.append(
            f"{split}: {path.relative_to(root)} holds {describe_values(values)} ({pixels} "
            f"pixel{'s' if pixels != 1 else ''}): {values_rule(train_ids=holds_train_ids(path.name))}"
        )
    if len(bad_values) > _EXAMPLES:
        more = len(bad_values) - _EXAMPLES
        checked = f" (of {len(read_values)} sampled)" if read_values is not None else ""
        problems.append(
            f"{split}: {more} more label files{checked} hold values outside their kind's, e.g. "
            f"{', '.join(p.name for p, _, _ in bad_values[_EXAMPLES : 2 * _EXAMPLES])}"
        )
    return problems


def require_tree(
    root: str | Path,
    reads: Sequence[tuple[str, bool]],
    *,
    real: bool,
    sampled: Collection[str] = (),
) -> list[str]:
    """``check_tree``, raising one ``DataError`` with one line per problem; the warnings."""
    result = check_tree(root, reads, real=real, sampled=sampled)
    if result.problems:
        raise DataError(
            f"the data tree {root} cannot serve this run:\n  " + "\n  ".join(result.problems)
        )
    return result.warnings
