"""QueueConfig: every ``QUEUE_*`` setting, typed, validated, readable from the environment.

A running pool reads ``max_workers``, ``worker_idle_timeout`` and ``task_timeout`` from its
config object on every use, so changing them at run time takes effect (seed: "Custom Worker
Pool Settings").
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskqueue_core.exceptions import ConfigError

__all__ = ["DEFAULT_DATABASE_URL", "QueueConfig"]

DEFAULT_DATABASE_URL = "sqlite://taskqueue.sqlite3"
"""The embedded default: a SQLite file in the working directory, no server needed."""


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(kw_only=True)
class QueueConfig:
    """Settings of a task queue and its workers. Every field has an env variable ``QUEUE_<NAME>``.

    Durations are seconds (floats allowed).
    """

    database_url: str = DEFAULT_DATABASE_URL
    """Where tasks live: ``postgres://user@host:port/db`` (production) or ``sqlite://path``."""
    max_workers: int = field(default_factory=_default_workers)
    """Concurrent task slots per worker process. Default: the CPU count."""
    worker_idle_timeout: float = 60.0
    """Seconds an idle slot lives before it retires (it comes back on demand)."""
    polling_interval: float = 2.0
    """Seconds between polls for new tasks when NOTIFY is off."""
    fallback_polling_interval: float = 30.0
    """Seconds between safety polls when NOTIFY is on."""
    task_timeout: float = 300.0
    """Default maximum run time of a task, in seconds (per task: ``timeout=``)."""
    max_retries: int = 3
    """Default number of retries after a failure (per task: ``max_retries=``)."""
    use_postgresql_notify: bool = True
    """Use PostgreSQL LISTEN/NOTIFY for wake-ups (ignored by other backends)."""
    notify_channel: str = "queue_new_task"
    """PostgreSQL notification channel."""
    secret_key: str | None = None
    """Key that signs stored function references (HMAC-SHA256). None: unsigned, with a warning."""
    imports: tuple[str, ...] = ()
    """Modules a worker imports at start (tasks, hooks). Env: comma-separated."""
    channels: tuple[str, ...] | None = None
    """Channels a worker claims from. None: all. Env: comma-separated."""
    heartbeat_interval: float = 5.0
    """Seconds between server heartbeats (also the reaper's interval)."""
    stale_after: float = 30.0
    """A server silent this long is dead: its running tasks are rescued."""
    shutdown_grace: float = 30.0
    """Seconds running tasks get to finish on shutdown before they are put back."""
    retention_days: float = 30.0
    """Finished tasks older than this are pruned by the reaper. 0 keeps them forever."""
    retry_backoff: float = 1.0
    """First retry delay in seconds; doubles with each attempt (with jitter)."""
    retry_backoff_max: float = 300.0
    """Upper bound of the retry delay, in seconds."""
    server_name: str | None = None
    """Name of this process in ``queued_task_workers``. None: ``hostname:pid``."""

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, name: str, value: Any) -> None:
        # Runtime changes are checked like construction: a pool reads these live.
        if name in _FIELDS and self.__dict__.get("_ready"):
            previous = getattr(self, name)
            object.__setattr__(self, name, _coerce(name, value, source=f"QueueConfig.{name}"))
            try:
                self.validate()
            except ConfigError:
                object.__setattr__(self, name, previous)
                raise
            return
        object.__setattr__(self, name, value)

    def validate(self) -> None:
        """Check every field and the rules across fields.

        Raises ``ConfigError`` naming the setting (its environment variable)."""
        for f in dataclasses.fields(self):
            object.__setattr__(
                self, f.name, _coerce(f.name, getattr(self, f.name), f"QueueConfig.{f.name}")
            )
        positive = (
            "max_workers",
            "worker_idle_timeout",
            "polling_interval",
            "fallback_polling_interval",
            "task_timeout",
            "heartbeat_interval",
            "stale_after",
            "retry_backoff",
            "retry_backoff_max",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"{_env(name)} must be greater than 0, got {getattr(self, name)!r}"
                )
        for name in ("max_retries", "shutdown_grace", "retention_days"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_env(name)} must be 0 or more, got {getattr(self, name)!r}")
        if self.stale_after <= self.heartbeat_interval:
            raise ConfigError(
                f"QUEUE_STALE_AFTER ({self.stale_after}) must exceed "
                f"QUEUE_HEARTBEAT_INTERVAL ({self.heartbeat_interval})"
            )
        if not self.notify_channel.replace("_", "").isalnum():
            raise ConfigError(
                f"QUEUE_NOTIFY_CHANNEL must be letters, digits and underscores, "
                f"got {self.notify_channel!r}"
            )
        scheme = self.database_url.split("://", 1)[0] if "://" in self.database_url else ""
        if scheme not in {"postgres", "postgresql", "asyncpg", "sqlite", "memory"}:
            raise ConfigError(
                "QUEUE_DATABASE_URL must start with postgres://, sqlite:// or memory://, "
                f"got {self.database_url!r}"
            )

    @property
    def is_postgres(self) -> bool:
        """True when ``database_url`` names a PostgreSQL database."""
        return self.database_url.split("://", 1)[0] in {"postgres", "postgresql", "asyncpg"}

    @property
    def resolved_server_name(self) -> str:
        """``server_name``, or ``hostname:pid`` of this process."""
        import socket

        return self.server_name or f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> QueueConfig:
        """Build a config from ``QUEUE_*`` variables (``environ``: default ``os.environ``).

        ``overrides`` win over the environment. Raises ``ConfigError`` naming the variable
        whose value is invalid.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in _FIELDS:
            key = _env(name)
            if key in env and env[key] != "":
                values[name] = _coerce(name, env[key], key)
        values.update(overrides)
        return cls(**values)


def _env(name: str) -> str:
    return f"QUEUE_{name.upper()}"


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _parse_tuple(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, list | tuple):
        if not all(isinstance(x, str) for x in raw):
            raise TypeError(raw)
        return tuple(raw)
    raise TypeError(raw)


_KINDS: dict[str, str] = {
    "database_url": "str",
    "max_workers": "int",
    "worker_idle_timeout": "float",
    "polling_interval": "float",
    "fallback_polling_interval": "float",
    "task_timeout": "float",
    "max_retries": "int",
    "use_postgresql_notify": "bool",
    "notify_channel": "str",
    "secret_key": "optstr",
    "imports": "tuple",
    "channels": "opttuple",
    "heartbeat_interval": "float",
    "stale_after": "float",
    "shutdown_grace": "float",
    "retention_days": "float",
    "retry_backoff": "float",
    "retry_backoff_max": "float",
    "server_name": "optstr",
}
_FIELDS = frozenset(_KINDS)


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert ``value`` (a string from the environment, or a Python value) to the field's type."""
    kind = _KINDS[name]
    expected = {
        "str": "a string",
        "optstr": "a string",
        "int": "a whole number",
        "float": "a finite number",
        "bool": "true or false",
        "tuple": "a comma-separated list",
        "opttuple": "a comma-separated list",
    }[kind]
    try:
        if kind.startswith("opt") and (value is None or value == ""):
            return None
        converters: dict[str, Callable[[Any], Any]] = {
            "str": _as_str,
            "optstr": _as_str,
            "int": _as_int,
            "float": _as_float,
            "bool": _as_bool,
            "tuple": _parse_tuple,
            "opttuple": _parse_tuple,
        }
        return converters[kind](value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be {expected}, got {value!r}") from None


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, (bool, float)):
        raise TypeError(value)
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, int):
        return value
    raise TypeError(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, str):
        number = float(value.strip())
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise TypeError(value)
    if not math.isfinite(number):  # "nan" would disable every comparison it takes part in
        raise ValueError(value)
    return number


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _parse_bool(value)
    raise TypeError(value)
