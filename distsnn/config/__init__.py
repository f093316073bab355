"""Typed run configuration: ``load(name, overrides)`` returns a validated ``Config``."""
from .loader import ConfigError, config_hash, load, resolve_path, to_dict
from .schema import FEATURE_LAYERS, METHODS, Config

__all__ = ["Config", "ConfigError", "FEATURE_LAYERS", "METHODS", "config_hash", "load", "resolve_path", "to_dict"]
