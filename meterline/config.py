"""Meterline's configuration: a TOML file, then environment variables, then command-line flags.

Unknown keys are refused with the key's full name so a typo never silently falls back to a default.
An annotated example lives in meterline.example.toml at the repository root.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


# Sections owned by a component, which validates its own table with `component_section()`
# (the OpenTelemetry Collector's model: each component declares and checks its config).
COMPONENT_SECTIONS = ("langfuse", "stripe", "billing", "dashboard")


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    http_port: int = 4318
    grpc_port: int = 4317
    admin_port: int = 0  # loopback-only admin API for CLI commands; 0 picks a free port
    max_request_bytes: int = 16 * 1024 * 1024  # after decompression
    queue_max_spans: int = 200_000  # spans accepted but not yet committed; past it: 503
    queue_max_bytes: int = 256 * 1024 * 1024  # the same bound in bytes of span data
    retry_after_seconds: int = 1


@dataclass(slots=True)
class AuthConfig:
    mode: str = "jwt"  # "jwt" or "none" (local development only)
    jwt_secret: str = ""  # HS256 shared secret; METERLINE_JWT_SECRET overrides
    jwks_file: str = ""  # RS256/ES256 public keys
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""
    tenant_claim: str = "tenant_id"
    spoof_policy: str = "reject"  # "reject" or "flag"
    leeway_seconds: int = 30


@dataclass(slots=True)
class FeatureRule:
    """Maps spans to a product feature; every field given must match (fnmatch patterns allowed)."""

    feature: str
    agent: str | None = None
    tool: str | None = None
    workflow: str | None = None
    span: str | None = None


@dataclass(slots=True)
class MeteringConfig:
    workflow_root_spans: list[str] = field(default_factory=list)  # root span names that count as workflows


@dataclass(slots=True)
class PricingConfig:
    catalog: str = ""  # plan catalog TOML; empty: the catalog shipped in pricing/plans.toml


@dataclass(slots=True)
class Config:
    db: str = "meterline.duckdb"
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    features: list[FeatureRule] = field(default_factory=list)
    metering: MeteringConfig = field(default_factory=MeteringConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    components: dict[str, Any] = field(default_factory=dict)  # raw COMPONENT_SECTIONS tables
    source: str | None = None  # the file it was read from

    @property
    def jwt_secret(self) -> str:
        return os.environ.get("METERLINE_JWT_SECRET") or self.auth.jwt_secret


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the TOML file (if any), then apply METERLINE_DB. Flags are applied by the CLI."""
    config = Config()
    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        config = _from_document(document)
        config.source = str(path)
    if os.environ.get("METERLINE_DB"):
        config.db = os.environ["METERLINE_DB"]
    _validate(config)
    return config


def _from_document(document: dict[str, Any]) -> Config:
    document = dict(document)
    config = Config()
    store = _build(dict, document.pop("store", {}), "store")
    _check_keys(store, {"path"}, "store")
    config.db = store.get("path", config.db)
    config.server = _build(ServerConfig, document.pop("server", {}), "server")
    config.auth = _build(AuthConfig, document.pop("auth", {}), "auth")
    config.metering = _build(MeteringConfig, document.pop("metering", {}), "metering")
    config.pricing = _build(PricingConfig, document.pop("pricing", {}), "pricing")
    rules = document.pop("features", [])
    if not isinstance(rules, list):
        raise ConfigError("features: expected an array of tables ([[features]])")
    config.features = [_build(FeatureRule, rule, f"features[{i}]") for i, rule in enumerate(rules)]
    for name in COMPONENT_SECTIONS:
        if name in document:
            config.components[name] = document.pop(name)
    if document:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(document))}")
    return config


def component_section(config: Config, name: str, cls: type[T]) -> T:
    """A component's own section as its dataclass; unknown keys are refused naming `name.key`."""
    assert name in COMPONENT_SECTIONS, name
    return _build(cls, config.components.get(name, {}), name)


def build_table(cls: type[T], table: Any, where: str) -> T:
    """Build a dataclass from a nested config table (e.g. one of `[[langfuse.destinations]]`)."""
    return _build(cls, table, where)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _build(cls: Any, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    if cls is dict:
        return table
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(table, set(fields), where)
    try:
        return cls(**table)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _validate(config: Config) -> None:
    if config.auth.mode not in ("jwt", "none"):
        raise ConfigError(f"auth.mode: expected 'jwt' or 'none', got {config.auth.mode!r}")
    if config.auth.spoof_policy not in ("reject", "flag"):
        raise ConfigError(f"auth.spoof_policy: expected 'reject' or 'flag', got {config.auth.spoof_policy!r}")
    for i, rule in enumerate(config.features):
        if not any((rule.agent, rule.tool, rule.workflow, rule.span)):
            raise ConfigError(f"features[{i}] ({rule.feature!r}): give at least one of agent, tool, workflow, span")
    if config.server.max_request_bytes <= 0:
        raise ConfigError("server.max_request_bytes: must be positive")
