"""Configuration precedence and credentials handling."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sagequeue.config import (
    ConfigError,
    Settings,
    load_access_keys,
    load_settings,
    read_credentials,
)


def test_defaults_match_design():
    settings = load_settings({}, environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8765)
    assert settings.data_dir == Path(".sagequeue")
    assert settings.region == "us-east-1"
    assert settings.account_id == "000000000000"
    assert settings.database_url.endswith(".sagequeue/sagequeue.db")
    assert settings.object_store_url.startswith("file://")


def test_flag_beats_environment_beats_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("port: 1111\nhost: 0.0.0.0\nrole: worker\n")
    settings = load_settings(
        {"port": 3333}, str(config), environ={"SAGEQUEUE_PORT": "2222", "SAGEQUEUE_ROLE": "api"}
    )
    assert settings.port == 3333
    assert settings.role == "api"
    assert settings.host == "0.0.0.0"


def test_config_file_paths_are_relative_to_the_file(tmp_path):
    config = tmp_path / "sub" / "c.yaml"
    config.parent.mkdir()
    config.write_text("data_dir: state\n")
    assert load_settings({}, str(config), environ={}).data_dir == config.parent / "state"


def test_unknown_role_is_refused():
    with pytest.raises(ConfigError, match="role"):
        load_settings({"role": "boss"}, environ={})


def test_invalid_yaml_is_refused_with_the_file_name(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("port: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_settings({}, str(config), environ={})


def test_credentials_are_generated_once_with_mode_0600(tmp_path):
    settings = Settings(data_dir=tmp_path)
    keys, generated = load_access_keys(settings)
    assert generated and len(keys) == 1
    path = tmp_path / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "[sagequeue]" in path.read_text()
    again, generated_again = load_access_keys(settings)
    assert again == keys and not generated_again


def test_every_profile_of_a_credentials_file_is_accepted(tmp_path):
    path = tmp_path / "creds"
    path.write_text(
        "[default]\naws_access_key_id = AK1\naws_secret_access_key = S1\n"
        "[other]\naws_access_key_id = AK2\naws_secret_access_key = S2\n[empty]\n"
    )
    assert read_credentials(path) == {"AK1": "S1", "AK2": "S2"}


def test_missing_explicit_credentials_file_is_an_error(tmp_path):
    settings = Settings(data_dir=tmp_path, credentials_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_access_keys(settings)


def test_fleet_settings_default_to_no_limit_every_endpoint_and_a_week_of_retention():
    settings = load_settings({}, environ={})
    assert settings.max_instances is None
    assert settings.endpoints == []
    assert settings.worker_timeout == 10.0
    assert settings.retention == 7 * 24 * 3600


def test_endpoints_are_a_lower_cased_comma_separated_list():
    settings = load_settings({"endpoints": "GPU-a, gpu-b"}, environ={})
    assert settings.endpoints == ["gpu-a", "gpu-b"]


def test_retention_takes_a_unit():
    assert load_settings({"retention": "12h"}, environ={}).retention == 12 * 3600
    assert load_settings({}, environ={"SAGEQUEUE_RETENTION": "90"}).retention == 90


@pytest.mark.parametrize("value", ["0", "-5m", "7w", "soon", ""])
def test_bad_retention_is_a_config_error(value):
    with pytest.raises(ConfigError, match="retention"):
        load_settings({"retention": value}, environ={})


def test_model_logs_are_kept_a_week_and_a_gibibyte_by_default():
    settings = load_settings({}, environ={})
    assert (settings.model_log_retention, settings.model_log_max_bytes) == (7 * 86400, 1024**3)


def test_model_log_bounds_take_a_duration_and_a_byte_count():
    settings = load_settings(
        {"model_log_retention": "2d"}, environ={"SAGEQUEUE_MODEL_LOG_MAX_BYTES": "5000"}
    )
    assert (settings.model_log_retention, settings.model_log_max_bytes) == (2 * 86400, 5000)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"model_log_retention": "never"}, "model-log-retention"),
        ({"model_log_max_bytes": 0}, "model-log-max-bytes"),
    ],
)
def test_bad_model_log_bounds_are_config_errors(flags, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(flags, environ={})


def test_negative_max_instances_is_a_config_error():
    with pytest.raises(ConfigError, match="max-instances"):
        load_settings({"max_instances": -1}, environ={})


def test_unknown_log_level_is_a_config_error():
    with pytest.raises(ConfigError, match="log-level must be one of debug, info"):
        load_settings({"log_level": "trace"}, environ={})
    assert load_settings({"log_level": "DEBUG"}, environ={}).log_level == "debug"


def test_limits_must_be_positive():
    with pytest.raises(ConfigError, match="max-connections must be positive"):
        load_settings({"max_connections": "0"}, environ={})


def test_container_allow_hosts_from_flag_environment_or_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("container_allow_hosts: [model.internal]\n")
    assert load_settings({}, str(config), environ={}).container_allow_hosts == ["model.internal"]
    from_env = load_settings({}, environ={"SAGEQUEUE_CONTAINER_ALLOW_HOSTS": "a, b"})
    assert from_env.container_allow_hosts == ["a", "b"]


def test_scoped_key_policy_is_read_from_the_config_file(tmp_path):
    from sagequeue.config import key_policies

    config = tmp_path / "c.yaml"
    config.write_text(
        "access_keys:\n"
        "  - {AccessKeyId: A, SecretAccessKey: s}\n"
        "  - AccessKeyId: B\n"
        "    SecretAccessKey: t\n"
        "    UserName: bob\n"
        "    Policy: {Statement: [{Effect: Allow, Action: 's3:*', Resource: '*'}]}\n"
    )
    settings = load_settings({}, str(config), environ={})
    policies = key_policies(settings)
    assert list(policies) == ["B"]
    assert policies["B"].principal_arn == "arn:aws:iam::000000000000:user/bob"


def test_unusable_policy_is_a_config_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "access_keys:\n  - AccessKeyId: B\n    SecretAccessKey: t\n"
        "    Policy: {Statement: [{Effect: Allow, Action: 's3:*'}]}\n"
    )
    with pytest.raises(ConfigError, match="the Policy of B"):
        load_settings({}, str(config), environ={})


def test_model_response_bound_and_failure_write_timeout_have_defaults_and_limits() -> None:
    defaults = load_settings({}, environ={})
    assert defaults.max_model_response_bytes == 1024**3  # SageMaker's 1 GB
    assert defaults.failure_write_timeout == 60.0
    given = load_settings(
        {"max_model_response_bytes": "4096"}, environ={"SAGEQUEUE_FAILURE_WRITE_TIMEOUT": "2.5"}
    )
    assert (given.max_model_response_bytes, given.failure_write_timeout) == (4096, 2.5)
    with pytest.raises(ConfigError, match="at most 4293918720"):
        load_settings({"max_model_response_bytes": str(4 * 1024**3)}, environ={})
    with pytest.raises(ConfigError, match="failure-write-timeout must be positive"):
        load_settings({"failure_write_timeout": "0"}, environ={})
