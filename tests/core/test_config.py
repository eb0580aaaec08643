"""QueueConfig: seed defaults, environment parsing, validation naming the variable, live changes."""

from __future__ import annotations

import os

import pytest

from taskqueue_core.config import DEFAULT_DATABASE_URL, QueueConfig
from taskqueue_core.exceptions import ConfigError


def test_seed_defaults() -> None:
    config = QueueConfig.from_env({})
    assert config.max_workers == (os.cpu_count() or 1)
    assert config.worker_idle_timeout == 60
    assert config.polling_interval == 2
    assert config.fallback_polling_interval == 30
    assert config.task_timeout == 300
    assert config.max_retries == 3
    assert config.use_postgresql_notify is True
    assert config.notify_channel == "queue_new_task"
    assert config.database_url == DEFAULT_DATABASE_URL
    assert config.secret_key is None


def test_every_variable_is_read_from_the_environment() -> None:
    config = QueueConfig.from_env(
        {
            "QUEUE_MAX_WORKERS": "4",
            "QUEUE_WORKER_IDLE_TIMEOUT": "120",
            "QUEUE_POLLING_INTERVAL": "0.5",
            "QUEUE_FALLBACK_POLLING_INTERVAL": "10",
            "QUEUE_TASK_TIMEOUT": "600",
            "QUEUE_MAX_RETRIES": "0",
            "QUEUE_USE_POSTGRESQL_NOTIFY": "false",
            "QUEUE_NOTIFY_CHANNEL": "jobs_ready",
            "QUEUE_DATABASE_URL": "postgres://u@h:5432/db",
            "QUEUE_SECRET_KEY": "k",
            "QUEUE_IMPORTS": "app.tasks, app.hooks",
            "QUEUE_CHANNELS": "mail,reports",
            "QUEUE_HEARTBEAT_INTERVAL": "2",
            "QUEUE_STALE_AFTER": "9",
            "QUEUE_SHUTDOWN_GRACE": "0",
            "QUEUE_RETENTION_DAYS": "7",
            "QUEUE_SERVER_NAME": "web-1",
        }
    )
    assert config.max_workers == 4
    assert config.worker_idle_timeout == 120.0
    assert config.polling_interval == 0.5
    assert config.max_retries == 0
    assert config.use_postgresql_notify is False
    assert config.notify_channel == "jobs_ready"
    assert config.is_postgres
    assert config.imports == ("app.tasks", "app.hooks")
    assert config.channels == ("mail", "reports")
    assert config.shutdown_grace == 0
    assert config.resolved_server_name == "web-1"


def test_overrides_win_over_the_environment() -> None:
    config = QueueConfig.from_env({"QUEUE_MAX_WORKERS": "4"}, max_workers=9)
    assert config.max_workers == 9


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("QUEUE_MAX_WORKERS", "abc", "QUEUE_MAX_WORKERS must be a whole number, got 'abc'"),
        ("QUEUE_MAX_WORKERS", "2.5", "QUEUE_MAX_WORKERS must be a whole number"),
        ("QUEUE_MAX_WORKERS", "0", "QUEUE_MAX_WORKERS must be greater than 0"),
        ("QUEUE_TASK_TIMEOUT", "soon", "QUEUE_TASK_TIMEOUT must be a finite number"),
        ("QUEUE_TASK_TIMEOUT", "nan", "QUEUE_TASK_TIMEOUT must be a finite number"),
        ("QUEUE_POLLING_INTERVAL", "inf", "QUEUE_POLLING_INTERVAL must be a finite number"),
        ("QUEUE_POLLING_INTERVAL", "-1", "QUEUE_POLLING_INTERVAL must be greater than 0"),
        ("QUEUE_MAX_RETRIES", "-1", "QUEUE_MAX_RETRIES must be 0 or more"),
        ("QUEUE_USE_POSTGRESQL_NOTIFY", "maybe", "must be true or false"),
        ("QUEUE_NOTIFY_CHANNEL", "new-task", "QUEUE_NOTIFY_CHANNEL must be letters"),
        ("QUEUE_DATABASE_URL", "mysql://x/y", "QUEUE_DATABASE_URL must start with postgres://"),
        ("QUEUE_STALE_AFTER", "1", "QUEUE_STALE_AFTER (1.0) must exceed QUEUE_HEARTBEAT_INTERVAL"),
    ],
)
def test_an_invalid_value_names_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        QueueConfig.from_env({variable: value})
    assert message in str(caught.value)


def test_wrong_types_in_code_name_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        QueueConfig(max_workers="four")  # type: ignore[arg-type]
    assert "QueueConfig.max_workers must be a whole number" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        QueueConfig(use_postgresql_notify=1)  # type: ignore[arg-type]
    assert "QueueConfig.use_postgresql_notify must be true or false" in str(caught.value)


def test_runtime_changes_are_validated_and_a_refused_one_changes_nothing() -> None:
    config = QueueConfig(max_workers=2)
    config.max_workers = 8
    config.task_timeout = 600
    assert (config.max_workers, config.task_timeout) == (8, 600.0)
    with pytest.raises(ConfigError, match="QUEUE_MAX_WORKERS must be greater than 0"):
        config.max_workers = 0
    assert config.max_workers == 8
    with pytest.raises(ConfigError, match="QUEUE_STALE_AFTER"):
        config.heartbeat_interval = 100
    assert config.heartbeat_interval == 5.0
