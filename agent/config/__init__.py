"""The one configuration model, built in one place: ``load_config()``.

* ``agent.config.values``: parsing and printing single values (durations, modes, signals, addresses);
* ``agent.config.refs``: secret references;
* ``agent.config.schema``: the frozen dataclasses, each field with its parser and its documentation;
* ``agent.config.yaml``: strict YAML reading (a duplicate key is an error);
* ``agent.config.loader``: YAML + environment + flags -> Config, every problem with its path.

Other packages import these names from ``agent.config``; the modules of this package import from each
other directly.
"""

from __future__ import annotations

from agent.config.loader import SECRET_FLAG, load_config, unknown_key
from agent.config.schema import (
    CONFIG_FILE_ENV,
    CONFIG_YAML_ENV,
    ENV_PREFIX,
    LOG_LEVELS,
    NOTIFIED_FILE_NAME,
    TOKEN_FILE_NAME,
    Command,
    Config,
    DotenvConfig,
    Environment,
    EventsConfig,
    ExecConfig,
    GcpConfig,
    Items,
    LogFormat,
    LogLevel,
    NotifyConfig,
    ProbesConfig,
    SecretSpec,
    Section,
    ServerConfig,
    Setting,
    SourceChoice,
    SourceName,
    Strategy,
    items,
    section,
    setting,
)
from agent.config.values import (
    describe,
    env_name_for,
    format_mode,
    is_loopback,
    optional_project,
    parse_delay,
    parse_duration,
    parse_mode,
    parse_signal,
    pubsub_name,
    split_listen,
)
from agent.config.yaml import (
    DuplicateKey,
    YamlDocument,
    load_yaml,
    read_text_file,
    read_yaml_file,
    read_yaml_text,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "CONFIG_YAML_ENV",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "NOTIFIED_FILE_NAME",
    "SECRET_FLAG",
    "TOKEN_FILE_NAME",
    "Command",
    "Config",
    "DotenvConfig",
    "DuplicateKey",
    "Environment",
    "EventsConfig",
    "ExecConfig",
    "GcpConfig",
    "Items",
    "LogFormat",
    "LogLevel",
    "NotifyConfig",
    "ProbesConfig",
    "SecretSpec",
    "Section",
    "ServerConfig",
    "Setting",
    "SourceChoice",
    "SourceName",
    "Strategy",
    "YamlDocument",
    "describe",
    "env_name_for",
    "format_mode",
    "is_loopback",
    "items",
    "load_config",
    "load_yaml",
    "optional_project",
    "parse_delay",
    "parse_duration",
    "parse_mode",
    "parse_signal",
    "pubsub_name",
    "read_text_file",
    "read_yaml_file",
    "read_yaml_text",
    "section",
    "setting",
    "split_listen",
    "unknown_key",
]
