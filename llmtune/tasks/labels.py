"""Classification labels: names or ids, single- or multi-label, counted, weighted and mapped to a model's classes.

A ``LabelSpace`` fixes the classes of a run: string names are sorted and numbered, integers keep
their order, and a column holding lists makes the task multi-label. The names end up in the model
config (``id2label``/``label2id``), so ``llmtune eval`` maps new data through them (``model_label_space``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from llmtune.errors import ConfigError, DataError


_SHOW = 5  # examples quoted in an error message


def label_kind(value: Any) -> str:
    """What one raw label is: ``missing``, ``int``, ``str``, ``list`` or ``bad``.

    Integral floats (``2.0``, as pandas writes an int column with a gap) count as ints; NaN, None
    and blank strings are missing labels.
    """
    if value is None:
        return "missing"
    if isinstance(value, (bool, numbers.Integral)):
        return "int"
    if isinstance(value, numbers.Real):
        if math.isnan(float(value)):
            return "missing"
        return "int" if float(value).is_integer() else "bad"
    if isinstance(value, str):
        return "str" if value.strip() else "missing"
    if isinstance(value, (list, tuple)):
        return "list"
    return "bad"


def _scalar(value: Any) -> Any:
    """The canonical form of a single label (ints as ``int``, names as they are)."""
    return value if isinstance(value, str) else int(value)


@dataclass(frozen=True)
class LabelSpace:
    """The classes a model predicts and how raw labels map onto them.

    Attributes:
        values: The raw label of each class id (ints or strings), in id order.
        multi_label: True when each row holds a list of labels.
        display: Names for the values when the data has them (a ``ClassLabel`` column), else None.
    """

    values: tuple[Any, ...]
    multi_label: bool = False
    display: Optional[tuple[str, ...]] = None
    _index: dict[Any, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.values)})

    @property
    def names(self) -> list[str]:
        """Display names in id order."""
        return list(self.display) if self.display else [str(v) for v in self.values]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, raw: Any) -> Any:
        """Class id of a single-label row, or a float multi-hot list for a multi-label row."""
        if not self.multi_label:
            return self._index[_scalar(raw)]
        hot = [0.0] * len(self.values)
        for item in raw:
            hot[self._index[_scalar(item)]] = 1.0
        return hot


def _examples(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_SHOW])
    return shown + (", ..." if len(values) > _SHOW else "")


def _flat_labels(labels: Sequence[Any], where: str) -> tuple[bool, list[Any]]:
    """``(multi_label, labels)``: the layout and every present label (list items flattened), checked.

    Raises:
        DataError: Floats/dicts, lists mixed with single labels, or ints mixed with strings.
    """
    kinds = Counter(label_kind(v) for v in labels)
    bad = [v for v in labels if label_kind(v) == "bad"]
    if bad:
        raise DataError(
            f"labels in {where} must be integer ids or string names (or lists of them for multi-label), got "
            f"{type(bad[0]).__name__} values such as {_examples(bad)}; regression targets are not classification"
        )
    multi = kinds["list"] > 0
    if multi and kinds["int"] + kinds["str"]:
        scalar = next(v for v in labels if label_kind(v) in ("int", "str"))
        raise DataError(f"the label column of {where} mixes lists (multi-label) with single labels such as "
                        f"{scalar!r}; write every label as a list for multi-label data")
    items = [i for v in labels if label_kind(v) == "list" for i in v] if multi else labels
    odd = [i for i in items if label_kind(i) in ("bad", "list")] if multi else []
    if odd:
        raise DataError(f"multi-label lists in {where} must hold names or ids, got {_examples(odd)}")
    present = [i for i in items if label_kind(i) != "missing"]
    if len({label_kind(i) for i in present}) > 1:
        what = "multi-label lists" if multi else "the label column"
        raise DataError(f"{what} of {where} mix integer ids and string names (inconsistent label types); "
                        "use one kind for every label, e.g. all names")
    return multi, [_scalar(i) for i in present]


def build_label_space(labels: Sequence[Any], where: str = "the training data") -> LabelSpace:
    """Find the classes in the training labels.

    String names are sorted alphabetically; integer labels are sorted numerically, so labels
    ``0..K-1`` keep their ids and e.g. star ratings ``1..5`` become ids ``0..4`` named ``"1".."5"``.

    Args:
        labels: The raw training labels (missing ones are ignored).
        where: How to name the data in messages.

    Raises:
        DataError: Labels that are neither ints nor strings (floats, dicts), mixed types, lists mixed
            with single labels, no labels at all, or a single class in single-label data.
    """
    multi, items = _flat_labels(labels, where)
    values = sorted(set(items))
    if not values:
        raise DataError(f"{where} has no labels; check --label-column")
    if not multi and len(values) < 2:
        raise DataError(
            f"{where} holds a single class ({values[0]!r} in all {len(items)} labelled rows); a classifier "
            "needs at least two classes: check --label-column or add rows of the other classes"
        )
    return LabelSpace(tuple(values), multi_label=multi)


def with_class_names(space: LabelSpace, feature: Any) -> LabelSpace:
    """Name integer classes after the data's ``ClassLabel`` (hub datasets such as imdb store ids + names)."""
    feature = getattr(feature, "feature", feature)  # a list of ClassLabel (multi-label) holds one
    names = getattr(feature, "names", None)
    if not names or not all(isinstance(v, int) and 0 <= v < len(names) for v in space.values):
        return space
    return LabelSpace(space.values, space.multi_label, tuple(names[v] for v in space.values))


def check_eval_labels(space: LabelSpace, labels: Sequence[Any], where: str = "the evaluation data") -> None:
    """Refuse evaluation labels the model cannot predict (unseen in training) or of another layout.

    Raises:
        DataError: Names the unseen labels with their row counts.
    """
    multi, items = _flat_labels(labels, where)
    if multi != space.multi_label and items:
        raise DataError(
            f"{where} has {'lists of labels' if multi else 'single labels'} but the training data has "
            f"{'lists (multi-label)' if space.multi_label else 'single labels'}; use the same layout in both"
        )
    unseen = Counter(i for i in items if i not in space._index)
    if unseen:
        listed = ", ".join(f"{name!r} ({n} rows)" for name, n in unseen.most_common(_SHOW))
        more = f" and {len(unseen) - _SHOW} more" if len(unseen) > _SHOW else ""
        raise DataError(
            f"labels in {where} never occur in the training data: {listed}{more}; the model cannot predict them. "
            f"Training classes are: {_examples(space.values)}. Add training rows for them or drop those rows"
        )


def class_counts(space: LabelSpace, encoded: Sequence[Any]) -> list[int]:
    """Rows per class id (multi-label: rows where the label is on)."""
    counts = [0] * len(space.values)
    for row in encoded:
        if space.multi_label:
            for i, on in enumerate(row):
                counts[i] += int(on > 0)
        else:
            counts[row] += 1
    return counts


def distribution_line(space: LabelSpace, counts: Sequence[int], total: int, where: str) -> str:
    """Human-readable class distribution, most frequent first (top 10)."""
    order = sorted(range(len(counts)), key=lambda i: -counts[i])
    parts = [f"{space.names[i]} {counts[i]} ({100 * counts[i] / max(total, 1):.0f} %)" for i in order[:10]]
    more = f", +{len(order) - 10} more" if len(order) > 10 else ""
    kind = "multi-label" if space.multi_label else f"{len(counts)} classes"
    return f"classes in {where} ({kind}, {total} rows): {', '.join(parts)}{more}"


def class_weights(spec: Any, space: LabelSpace, counts: Sequence[int], total: int) -> Optional[list[float]]:
    """Per-class loss weights from ``train.class_weights``.

    Args:
        spec: None, ``"balanced"`` (``total / (classes * count)``, sklearn's rule; multi-label: the
            positive weight ``negatives / positives`` of each label), a list in id order, or a
            mapping label name -> weight (unnamed classes get 1.0).
        space: The label space.
        counts: Training rows per class (``class_counts``).
        total: Training rows.

    Returns:
        One weight per class id, or None for an unweighted loss.

    Raises:
        ConfigError: An unknown spec, a list of the wrong length, an unknown name or a weight <= 0.
    """
    if spec is None:
        return None
    k = len(space.values)
    if spec == "balanced":
        if space.multi_label:
            return [(total - c) / c if c else 1.0 for c in counts]
        return [total / (k * c) if c else 1.0 for c in counts]
    if isinstance(spec, (list, tuple)):
        if len(spec) != k:
            raise ConfigError(f"train.class_weights: {len(spec)} weights given for {k} classes "
                              f"({_examples(space.names)})")
        weights = [float(w) for w in spec]
    elif isinstance(spec, dict):
        unknown = [name for name in spec if str(name) not in space.label2id]
        if unknown:
            raise ConfigError(f"train.class_weights: unknown classes {_examples(unknown)}; "
                              f"classes are {_examples(space.names)}")
        weights = [float(spec.get(name, spec.get(_scalar(v), 1.0))) for name, v in zip(space.names, space.values)]
    else:
        raise ConfigError(f"train.class_weights: use 'balanced', a list of {k} weights or a mapping class -> weight")
    if min(weights) <= 0:
        raise ConfigError("train.class_weights: every weight must be positive")
    return weights


def _uses_ids(labels: Sequence[Any]) -> bool:
    """Whether the data's labels are integers (ids or numbers) rather than names."""
    for value in labels:
        for item in value if label_kind(value) == "list" else [value]:
            kind = label_kind(item)
            if kind in ("int", "str"):
                return kind == "int"
    return False


def model_label_space(config: Any, labels: Sequence[Any], feature: Any = None) -> Any:
    """The model's classes (``id2label``) as a ``LabelSpace`` over the raw labels the data uses.

    Names in the data map through the names in ``id2label``. Integers map through a ``ClassLabel``
    column's names when the data has them, else through numeric class names (a model trained on
    star ratings 1-5 has classes named "1".."5"), else they are class ids.
    """
    names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    if not _uses_ids(labels):
        return LabelSpace(tuple(names), multi_label=multi)
    class_names = getattr(getattr(feature, "feature", feature), "names", None)
    if class_names and set(names) <= set(class_names):
        return LabelSpace(tuple(class_names.index(n) for n in names), multi, tuple(names))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return LabelSpace(tuple(int(n) for n in names), multi_label=multi)
    return LabelSpace(tuple(range(len(names))), multi, tuple(names))
