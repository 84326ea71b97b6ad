"""Configuration: daemon settings and the school inventory, loaded with file:line errors."""

from telemetryd.config.loader import (
    Config,
    ConfigError,
    apply_shard,
    load_config,
    load_inventory,
    load_settings,
    loading_config,
    shard_of,
)
from telemetryd.config.settings import Settings
from telemetryd.config.yamlsrc import Problem

__all__ = [
    "Config",
    "ConfigError",
    "Problem",
    "Settings",
    "apply_shard",
    "load_config",
    "load_inventory",
    "load_settings",
    "loading_config",
    "shard_of",
]
