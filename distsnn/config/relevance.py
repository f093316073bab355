"""Cross-key rules the schema cannot express: no recipe key that silently does nothing, no TCL layer counted twice.

A key written in a recipe (the YAML file) that the recipe's own run ignores is refused with a message naming it,
e.g. ``data.augment.color_jitter`` with a one-view method. Only written keys are checked: the defaults are the
papers' values (color_jitter 0.4 / grayscale_p 0.2 are STCL's) and a default the run ignores is no user's knob.
``--set`` overrides are not held to the rule: they derive variants of a recipe (another ``method.name``,
telemetry off), and a variant naturally leaves its recipe's method-specific keys unused; the run's
``config.yaml`` records what was resolved.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from .schema import Config

CONTRAST_METHODS = ("tcl", "stcl", "sscl+stcl")     # TCL heads and temporal SupCon terms
TEACHER_METHODS = ("sscl", "sscl+stcl")             # an ANN teacher and NCE terms
TWO_VIEW_METHODS = ("stcl", "sscl+stcl")            # two augmented views per image
CLASSIFICATION_METHODS = ("tcl", "stcl", "sscl", "sscl+stcl")  # ann/baseline/tet fix their own CE term
EMBEDDED = ("digits", "event_digits")               # data sources built on first use under data.cache_dir


class Rule(NamedTuple):
    """``key``: a dotted key, or a section ending in "." (every key under it); ``applies``: whether the run
    reads it; ``why``: the message when it does not."""

    key: str
    applies: Callable[[Config], bool]
    why: Callable[[Config], str]


def _method(methods: tuple[str, ...], what: str) -> tuple[Callable[[Config], bool], Callable[[Config], str]]:
    return (lambda c: c.method.name in methods,
            lambda c: f"{what} only ({', '.join(methods)}); method.name is {c.method.name!r}, which ignores it")


RULES = (
    Rule("method.tcl.", *_method(CONTRAST_METHODS, "applies to the temporal contrastive methods")),
    Rule("method.sscl.", *_method(TEACHER_METHODS, "applies to the teacher methods")),
    Rule("teacher.", *_method(TEACHER_METHODS, "a teacher is used by the teacher methods")),
    Rule("method.classification", *_method(CLASSIFICATION_METHODS, "chooses the CE term of the contrastive methods")),
    Rule("data.augment.color_jitter", *_method(TWO_VIEW_METHODS, "color_jitter applies to two-view methods")),
    Rule("data.augment.grayscale_p", *_method(TWO_VIEW_METHODS, "grayscale_p applies to two-view methods")),
    Rule("data.augment.min_scale", lambda c: c.data.augment.pad_crop == 0,
         lambda c: "sets the random-resized crop, which data.augment.pad_crop > 0 replaces"),
    Rule("teacher.min_accuracy", lambda c: c.teacher.check_accuracy,
         lambda c: "is checked only with teacher.check_accuracy: true"),
    Rule("data.train_shards", lambda c: c.data.source == "shards",
         lambda c: f"is read only with data.source: shards (it is {c.data.source!r})"),
    Rule("data.val_shards", lambda c: c.data.source == "shards",
         lambda c: f"is read only with data.source: shards (it is {c.data.source!r})"),
    Rule("data.cache_dir", lambda c: c.data.source in EMBEDDED,
         lambda c: f"is read only with data.source: digits or event_digits (it is {c.data.source!r})"),
    Rule("data.train_fraction", lambda c: c.data.source in EMBEDDED,
         lambda c: "only the embedded digits data can be subsampled (data.source: digits or event_digits)"),
    Rule("telemetry.bind_address", lambda c: c.telemetry.enabled, lambda c: "is read only with telemetry.enabled: true"),
    Rule("telemetry.base_port", lambda c: c.telemetry.enabled, lambda c: "is read only with telemetry.enabled: true"),
    Rule("telemetry.update_every_steps", lambda c: c.telemetry.enabled,
         lambda c: "is read only with telemetry.enabled: true"),
)


def explicit_keys(data: dict, prefix: str = "") -> list[str]:
    """The dotted leaf keys written in a raw YAML mapping (lists are leaves)."""
    keys = []
    for name, value in data.items():
        if isinstance(value, dict):
            keys += explicit_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def check_relevance(cfg: Config, data: dict, source: str, error: type[Exception]) -> None:
    """Raise ``error("<source>: <key>: <why>: remove it")`` for the first key written in the raw mapping ``data``
    that the run described by ``cfg`` ignores."""
    for key in explicit_keys(data):
        for rule in RULES:
            hit = key.startswith(rule.key) if rule.key.endswith(".") else key == rule.key
            if hit and not rule.applies(cfg):
                raise error(f"{source}: {key}: {rule.why(cfg)}: remove it")


def check_tcl_layers(cfg: Config, source: str, error: type[Exception]) -> None:
    """``stage4`` and ``pooled`` together: the pooled feature is the global average of stage 4 (the last stage of
    every 4-stage student), and a stage-4 head has no conv block to bring it anywhere else (it is already at the
    last stage's resolution), so the two heads would see one vector and double its weight. The objective
    repeats the check with the student's actual last stage."""
    layers = cfg.method.tcl.layers
    if cfg.method.name in CONTRAST_METHODS and "stage4" in layers and "pooled" in layers:
        raise error(f"{source}: method.tcl.layers: stage4 and pooled are the same vector after global average "
                    f"pooling (pooled = the mean of stage4 over H, W), so both would count it twice; list one of them "
                    f"(got {layers})")
