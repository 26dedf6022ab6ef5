"""Which way a metric improves, read from its name (``val_loss`` down, ``val_acc`` up)."""

from __future__ import annotations

import re
from typing import Literal

# Words that say which way a metric improves. Matched as whole words of the name (split at
# non-alphanumerics and camelCase), never as substrings: "map" is inside "mape", "acc" inside
# "accuracy_loss", and a substring rule flips such names.
_LOWER_IS_BETTER_WORDS = frozenset(
    {
        "loss", "error", "err", "mae", "mse", "rmse", "mape", "smape", "msle", "nll",
        "crossentropy", "perplexity", "ppl", "wer", "cer",
    }
)  # fmt: skip
_HIGHER_IS_BETTER_WORDS = frozenset(
    {
        "accuracy", "acc", "f1", "auc", "auroc", "map", "precision", "recall", "iou", "dice",
        "bleu", "rouge", "rouge1", "rouge2", "rougel", "rougelsum", "r2",
    }
)  # fmt: skip
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def metric_direction(name: str) -> Literal["min", "max"] | None:
    """Which way a metric improves, read from its name.

    The name is split into words (at ``_``, ``/``, ``.``, ``-``, spaces and camelCase) and the
    last word with a known direction decides, so ``val_loss`` and ``eval_mape`` are ``"min"``
    while ``val_acc``, ``eval_f1`` and ``val_map`` are ``"max"``. A name written as one word
    (``valloss``) is matched on its ending for the unambiguous long words only.

    Args:
        name: A metric name as logged, e.g. ``"val_accuracy"`` or ``"val/loss"``.

    Returns:
        ``"min"`` when lower is better (loss, error, mae, mse, rmse, mape, perplexity, wer,
        cer...), ``"max"`` when higher is better (accuracy, acc, f1, auc, map, precision,
        recall, iou, bleu, r2...), None when the name does not say.
    """
    if not isinstance(name, str):
        return None
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]
    for word in reversed(words):
        if word in _LOWER_IS_BETTER_WORDS:
            return "min"
        if word in _HIGHER_IS_BETTER_WORDS:
            return "max"
    if words:
        # Short words (acc, err, map, wer, cer...) end too many unrelated words to match inside
        # one: "answer" is not a word error rate.
        last = words[-1]
        for word in sorted(_LOWER_IS_BETTER_WORDS | _HIGHER_IS_BETTER_WORDS, key=len)[::-1]:
            if len(word) >= 4 and last.endswith(word):
                return "min" if word in _LOWER_IS_BETTER_WORDS else "max"
    return None


__all__ = ["metric_direction"]
