"""Params trees for the study: dotted keys, the differences between two trees, and which arms
change anything."""

from __future__ import annotations

import copy
import logging
from typing import Any

from birdclef.config import ConfigError, Params

log = logging.getLogger(__name__)

PRIMARY = "student"  # the arm every other arm is compared with


def dotted(tree: dict[str, Any], key: str) -> Any:
    """The value at a dotted key (`student.pseudo_labels.targets`) of a params tree."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            raise KeyError(f"{key!r} is not a param")
        tree = tree[part]
    return tree


def with_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a params tree with dotted-key overrides set, as `dvc exp run -S` sets them."""
    out = copy.deepcopy(tree)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def arms_that_change_something(params: Params, arms: list[str]) -> list[str]:
    """The arms to run: an arm whose overrides params.yaml already holds would run the student arm
    again (e.g. `labelled_only` where the student's targets are already labelled-only), so it is
    left out."""
    tree = params.model_dump(mode="json")
    kept = []
    for arm in arms:
        try:
            same = all(dotted(tree, k) == v for k, v in params.study.arms[arm].items())
        except KeyError as exc:
            raise ConfigError(f"study.arms.{arm}: {exc.args[0]}") from None
        if arm != PRIMARY and same:
            log.info("study: arm %s is what params.yaml already says (the %s arm): left out", arm, PRIMARY)
        else:
            kept.append(arm)
    return kept


def changed_params(expected: Any, found: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two params trees (the `study` section aside)."""
    if not (isinstance(expected, dict) and isinstance(found, dict)):
        return [] if expected == found else [prefix.rstrip(".")]
    keys = sorted(set(expected) | set(found))
    return [changed for key in keys if prefix or key != "study"
            for changed in changed_params(expected.get(key), found.get(key), f"{prefix}{key}.")]
