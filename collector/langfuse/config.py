"""The `[langfuse]` section: the projects spans go to, their keys, and how hard to try.

    [langfuse]
    environment = "production"    # langfuse.environment (else LANGFUSE_TRACING_ENVIRONMENT, else "default")
    # The shared (pooled) project. LANGFUSE_BASE_URL / LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY and
    # LANGFUSE_SECRET_KEY, the Langfuse SDK's own variables, override these when set.
    host = "https://cloud.langfuse.com"
    public_key = "pk-lf-..."      # or public_key_env = "NAME"
    secret_key_file = "/run/secrets/langfuse"   # or secret_key_env = "NAME"

    [[langfuse.projects]]         # a dedicated (silo) project for some tenants and/or tiers
    name = "acme"                 # names the cursor: "langfuse:acme"
    tenants = ["acme"]
    tiers = ["enterprise"]
    host = "https://eu.cloud.langfuse.com"   # default: the shared project's host
    public_key_env = "ACME_LF_PUBLIC"
    secret_key_env = "ACME_LF_SECRET"

Secret keys are read from the environment or a file only, never from the config file itself, and
are kept out of every repr and log line. A missing variable or file stops the server at start.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.langfuse.routing import Route
from meterline.config import Config, ConfigError, build_table, component_section

DEFAULT_HOST = "https://cloud.langfuse.com"
SHARED = "default"  # the shared project's name
OTLP_PATH = "/api/public/otel/v1/traces"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENVIRONMENT = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")  # Langfuse's own rule


@dataclass(slots=True)
class ProjectKeys:
    """Where a Langfuse project lives and how to reach it: the same keys for shared and dedicated projects."""

    host: str = ""
    public_key: str = ""
    public_key_env: str = ""
    secret_key_env: str = ""
    secret_key_file: str = ""
    project_id: str = ""  # only for links from the dashboards to traces in Langfuse's UI


@dataclass(slots=True)
class ProjectSection(ProjectKeys):
    """One `[[langfuse.projects]]` table."""

    name: str = ""  # required: checked with the other project rules
    tenants: list[str] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LangfuseSection(ProjectKeys):
    enabled: bool = True  # false: no export, even with LANGFUSE_* set
    environment: str = ""
    projects: list[Any] = field(default_factory=list)
    batch_spans: int = 500  # spans read per cycle
    max_request_bytes: int = 4 * 1024 * 1024  # serialized, before gzip; larger batches are split
    poll_seconds: float = 1.0  # idle wait between looks at the store
    timeout_seconds: float = 15.0  # per request
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    max_retry_after_seconds: float = 3600.0  # a longer Retry-After is capped to this


@dataclass(frozen=True, slots=True)
class Destination:
    """A Langfuse project spans are delivered to."""

    name: str
    host: str
    public_key: str
    secret_key: str = field(repr=False)
    route: Route = Route()

    @property
    def key(self) -> str:
        """The destination's row in export_cursors."""
        return f"langfuse:{self.name}"

    @property
    def endpoint(self) -> str:
        return self.host.rstrip("/") + OTLP_PATH


@dataclass(frozen=True, slots=True)
class LangfuseSettings:
    destinations: tuple[Destination, ...]
    environment: str
    section: LangfuseSection


def load_settings(config: Config, environ: dict[str, str] | None = None) -> LangfuseSettings:
    """Validate `[langfuse]` and resolve every key; raises ConfigError naming the culprit."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if v}
    section = component_section(config, "langfuse", LangfuseSection)
    environment = section.environment or env.get("LANGFUSE_TRACING_ENVIRONMENT", "default")
    if not _ENVIRONMENT.match(environment):
        raise ConfigError(f"langfuse.environment {environment!r}: use 1-40 of a-z 0-9 _ - , not starting with 'langfuse'")
    for name in ("batch_spans", "max_request_bytes", "poll_seconds", "timeout_seconds",
                 "backoff_initial_seconds", "backoff_max_seconds", "max_retry_after_seconds"):
        if not getattr(section, name) > 0:
            raise ConfigError(f"langfuse.{name}: must be positive")
    if not section.enabled:
        return LangfuseSettings((), environment, section)
    if not isinstance(section.projects, list):
        raise ConfigError("langfuse.projects: expected an array of tables ([[langfuse.projects]])")
    projects = [build_table(ProjectSection, table, f"langfuse.projects[{i}]") for i, table in enumerate(section.projects)]
    shared_host = _host(env.get("LANGFUSE_BASE_URL") or env.get("LANGFUSE_HOST") or section.host or DEFAULT_HOST, "langfuse.host")
    claimed_tenants, claimed_tiers = _claims(projects)
    claims = {"claimed_tenants": claimed_tenants, "claimed_tiers": claimed_tiers}
    destinations = []
    shared = _shared(section, env, shared_host, Route(rest=True, **claims))
    if shared is not None:
        destinations.append(shared)
    for i, project in enumerate(projects):
        where = f"langfuse.projects[{i}] ({project.name!r})"
        destinations.append(Destination(
            name=project.name,
            host=_host(project.host or shared_host, f"{where}.host"),
            public_key=_public_key(project.public_key, project.public_key_env, env, where),
            secret_key=_secret_key(project.secret_key_env, project.secret_key_file, env, where),
            route=Route(tenants=tuple(project.tenants), tiers=tuple(project.tiers), **claims),
        ))
    return LangfuseSettings(tuple(destinations), environment, section)


def _claims(projects: list[ProjectSection]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tenants: dict[str, str] = {}
    tiers: dict[str, str] = {}
    names = {SHARED}
    for i, project in enumerate(projects):
        where = f"langfuse.projects[{i}]"
        if not isinstance(project.name, str) or not _NAME.match(project.name) or project.name in names:
            raise ConfigError(f"{where}.name {project.name!r}: give a unique name of a-z 0-9 _ - (not 'default')")
        names.add(project.name)
        if not project.tenants and not project.tiers:
            raise ConfigError(f"{where} ({project.name!r}): name the tenants and/or tiers it receives")
        for kind, values, seen in (("tenant", project.tenants, tenants), ("tier", project.tiers, tiers)):
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise ConfigError(f"{where}.{kind}s: expected an array of non-empty strings")
            for value in values:
                if value in seen:
                    raise ConfigError(f"{where}: {kind} {value!r} is already routed to project {seen[value]!r}")
                seen[value] = project.name
    return tuple(sorted(tenants)), tuple(sorted(tiers))


def _shared(section: LangfuseSection, env: dict[str, str], host: str, route: Route) -> Destination | None:
    """The shared project, if keys for it are configured (a public key alone is an error)."""
    public = env.get("LANGFUSE_PUBLIC_KEY") or _public_key(section.public_key, section.public_key_env, env, "langfuse", required=False)
    has_secret = "LANGFUSE_SECRET_KEY" in env or section.secret_key_env or section.secret_key_file
    if not public and not has_secret:
        return None
    if not public:
        raise ConfigError("langfuse: a secret key is configured but no public key: set LANGFUSE_PUBLIC_KEY or langfuse.public_key")
    if not has_secret:
        raise ConfigError("langfuse: a public key is configured but no secret key: set LANGFUSE_SECRET_KEY, "
                          "langfuse.secret_key_env or langfuse.secret_key_file")
    secret = env.get("LANGFUSE_SECRET_KEY") or _secret_key(section.secret_key_env, section.secret_key_file, env, "langfuse")
    return Destination(SHARED, host, public, secret, route)


def _host(host: str, where: str) -> str:
    if not re.match(r"^https?://[^/\s]+", host):
        raise ConfigError(f"{where} {host!r}: expected an http(s) URL such as {DEFAULT_HOST}")
    return host.rstrip("/")


def _public_key(inline: str, env_name: str, env: dict[str, str], where: str, required: bool = True) -> str:
    if inline and env_name:
        raise ConfigError(f"{where}: give public_key or public_key_env, not both")
    if env_name:
        if env_name not in env:
            raise ConfigError(f"{where}: public_key_env names {env_name}, which is not set")
        return env[env_name]
    if not inline and required:
        raise ConfigError(f"{where}: public_key or public_key_env is required")
    return inline


def _secret_key(env_name: str, path: str, env: dict[str, str], where: str) -> str:
    if bool(env_name) == bool(path):
        raise ConfigError(f"{where}: give exactly one of secret_key_env or secret_key_file (secrets never go in the config file)")
    if env_name:
        if env_name not in env:
            raise ConfigError(f"{where}: secret_key_env names {env_name}, which is not set")
        return env[env_name]
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret_key_file {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{where}: secret_key_file {path} is empty")
    return secret
