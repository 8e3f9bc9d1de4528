"""Server configuration: command-line flags > SAGEQUEUE_* environment > config file >
defaults (DESIGN.md, Defaults)."""

from __future__ import annotations

import configparser
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sagequeue.domain.errors import StartupError
from sagequeue.domain.policy import KeyPolicy, PolicyError, parse_policy, user_arn

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_DATA_DIR = ".sagequeue"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "000000000000"
CREDENTIALS_PROFILE = "sagequeue"
ROLES = ("all", "api", "worker")
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
# Model logs (the CloudWatch Logs API) are kept this long, and to at most this size.
DEFAULT_MODEL_LOG_RETENTION_SECONDS = 7 * 24 * 3600
DEFAULT_MODEL_LOG_MAX_BYTES = 1024**3
# A worker whose heartbeat is older than this is gone: its instances and requests move.
DEFAULT_WORKER_TIMEOUT_SECONDS = 10.0
# The largest model response a worker takes (SageMaker Asynchronous Inference's payload
# limit, 1 GB); a worker holds each response it writes in memory. Responses travel to the
# worker in frames with a 32-bit length, hence the upper bound.
DEFAULT_MAX_MODEL_RESPONSE_BYTES = 1024**3
MAX_MODEL_RESPONSE_BYTES_LIMIT = 4095 * 1024**2
# How long a worker keeps trying to write a failure object before the request goes back
# to the queue (to end once the object store is back).
DEFAULT_FAILURE_WRITE_TIMEOUT_SECONDS = 60.0
# Failed notification deliveries are retried this long before they count as failed.
DEFAULT_NOTIFICATION_RETRY_SECONDS = 3600.0
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(StartupError):
    """A bad flag, variable or config file; the message says which and why."""


@dataclass(slots=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database: str | None = None  # sqlite:///path (default <data-dir>/sagequeue.db)
    object_store: str | None = None  # file:///path (default <data-dir>/objects) or s3://
    s3_endpoint_url: str | None = None
    credentials_file: Path | None = None  # default <data-dir>/credentials
    role: str = "all"
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    log_level: str = "info"
    # Hosts from which https:// InputLocations may be fetched.
    https_input_allow_hosts: list[str] = field(default_factory=list)
    # Fleet: model instances this worker process may run (None: no limit), the endpoints
    # it serves (lower-cased; empty: all), and when a silent worker counts as gone.
    max_instances: int | None = None
    endpoints: list[str] = field(default_factory=list)
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS
    # Finished invocations are purged from the queue store this long after they ended.
    retention: float = DEFAULT_RETENTION_SECONDS
    # Model logs (stdout / stderr of model instances and sagequeue's lines about them)
    # are purged this long after they were written, oldest first past the size bound.
    model_log_retention: float = DEFAULT_MODEL_LOG_RETENTION_SECONDS
    model_log_max_bytes: int = DEFAULT_MODEL_LOG_MAX_BYTES
    # How long an http(s):// model container has to answer GET /ping at start.
    container_startup_timeout: float = 30.0
    # Hosts that http(s):// model container Images may name (loopback ones are allowed
    # without listing when the server listens on loopback; docs/security.md).
    container_allow_hosts: list[str] = field(default_factory=list)
    # Notifications (docs/notifications.md): the SNS endpoint (None: AWS), the hosts
    # webhook topics may name, how long failed deliveries are retried, and the secret
    # that signs the deliveries of each webhook topic (URL -> secret; config file only).
    sns_endpoint_url: str | None = None
    notification_allow_hosts: list[str] = field(default_factory=list)
    notification_retry_for: float = DEFAULT_NOTIFICATION_RETRY_SECONDS
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    # HTTP limits, enforced before authentication (docs/security.md).
    max_header_bytes: int = 64 * 1024  # request line + header block; 431 beyond
    max_header_count: int = 256  # header fields per request; 431 beyond
    header_timeout: float = 20.0  # seconds to receive a whole request head
    keep_alive_timeout: float = 5.0  # seconds an idle connection is kept
    body_timeout: float = 30.0  # seconds without a byte while a body is being received
    max_connections: int = 1024  # open connections; more are refused with 503
    max_control_body: int = 1024 * 1024  # control-plane request body, bytes
    # Model responses over this many bytes fail the request (docs/reliability.md).
    max_model_response_bytes: int = DEFAULT_MAX_MODEL_RESPONSE_BYTES
    failure_write_timeout: float = DEFAULT_FAILURE_WRITE_TIMEOUT_SECONDS
    # GET /metrics from anywhere but loopback needs this bearer token (or a signature).
    metrics_token: str | None = None
    # TLS for the whole listener (PEM files); the web console at /ui needs it, or
    # ``insecure_ui``, when the server listens on anything but loopback.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_ui: bool = False
    # CloudWatch and Application Auto Scaling time runs this many times faster than real
    # time (periods, alarm evaluation, cooldowns): for tests and demos, 1 in production.
    time_scale: float = 1.0
    # Access keys declared inline in the config file (AccessKeyId -> SecretAccessKey).
    access_keys: dict[str, str] = field(default_factory=dict)
    # Policy documents of scoped keys (AccessKeyId -> IAM-style policy) and the user
    # names they act as in refusals (AccessKeyId -> UserName).
    key_policies: dict[str, Any] = field(default_factory=dict)
    key_users: dict[str, str] = field(default_factory=dict)
    # SageMaker resources declared in the config file, in SageMaker's field names:
    # {"Models": [...CreateModel...], "EndpointConfigs": [...], "Endpoints": [...]}.
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Buckets to create, and local files to upload, at start:
    # [{"Name": "b", "Objects": {"key": "path/to/file"}}]
    buckets: list[dict[str, Any]] = field(default_factory=list)
    config_dir: Path = field(default_factory=Path.cwd)  # relative paths in the file

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / 'sagequeue.db').absolute()}"

    @property
    def object_store_url(self) -> str:
        return self.object_store or f"file://{(self.data_dir / 'objects').absolute()}"

    @property
    def credentials_path(self) -> Path:
        return self.credentials_file or self.data_dir / "credentials"

    @property
    def listens_on_loopback(self) -> bool:
        return host_is_loopback(self.host)

    @property
    def console_enabled(self) -> bool:
        """The web console is served on loopback, over TLS, or when asked for in clear."""
        return self.listens_on_loopback or self.tls_cert is not None or self.insecure_ui

    @property
    def runs_api(self) -> bool:
        return self.role in ("all", "api")

    @property
    def runs_worker(self) -> bool:
        return self.role in ("all", "worker")


# name -> (environment variable, converter). Flag names use dashes, fields underscores.
_SCALARS: dict[str, Any] = {
    "host": str,
    "port": int,
    "data_dir": Path,
    "database": str,
    "object_store": str,
    "s3_endpoint_url": str,
    "sns_endpoint_url": str,
    "credentials_file": Path,
    "role": str,
    "region": str,
    "account_id": str,
    "log_level": str,
    "max_instances": int,
    "container_startup_timeout": float,
    "worker_timeout": float,
    "max_header_bytes": int,
    "max_header_count": int,
    "header_timeout": float,
    "keep_alive_timeout": float,
    "body_timeout": float,
    "max_connections": int,
    "max_control_body": int,
    "max_model_response_bytes": int,
    "failure_write_timeout": float,
    "metrics_token": str,
    "tls_cert": Path,
    "tls_key": Path,
    "time_scale": float,
    "model_log_max_bytes": int,
}
# Limits that must be positive (a zero or negative one would refuse everything).
_POSITIVE = (
    "max_header_bytes",
    "max_header_count",
    "header_timeout",
    "keep_alive_timeout",
    "body_timeout",
    "max_connections",
    "max_control_body",
    "max_model_response_bytes",
    "failure_write_timeout",
    "time_scale",
    "model_log_max_bytes",
    "container_startup_timeout",
)
_RESOURCE_KEYS = ("Models", "EndpointConfigs", "Endpoints")


def env_var(name: str) -> str:
    return "SAGEQUEUE_" + name.upper()


def load_settings(
    flags: dict[str, Any], config_file: str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Merge flags (None = not given), environment and the config file."""
    environ = dict(os.environ) if environ is None else environ
    config_file = config_file or environ.get("SAGEQUEUE_CONFIG")
    settings = Settings()
    file_values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        settings.config_dir = path.absolute().parent
        file_values = {k.replace("-", "_"): v for k, v in loaded.items()}
    for name, convert in _SCALARS.items():
        value = flags.get(name)
        if value is None:
            value = environ.get(env_var(name))
        if value is None:
            value = file_values.get(name)
            if value is not None and convert is Path:
                value = settings.config_dir / str(value)
        if value is None:
            continue
        try:
            setattr(settings, name, convert(value))
        except (TypeError, ValueError):
            raise ConfigError(f"{name.replace('_', '-')}: invalid value {value!r}") from None
    if settings.role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {settings.role!r}")
    settings.log_level = settings.log_level.lower()
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"log-level must be one of {', '.join(LOG_LEVELS)}, not {settings.log_level!r}"
        )
    for name in _POSITIVE:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name.replace('_', '-')} must be positive")
    settings.https_input_allow_hosts = _name_list(
        flags, environ, file_values, "https_input_allow_hosts"
    )
    settings.container_allow_hosts = _name_list(
        flags, environ, file_values, "container_allow_hosts"
    )
    settings.endpoints = [
        name.lower() for name in _name_list(flags, environ, file_values, "endpoints")
    ]
    retention = _first_given(flags, environ, file_values, "retention")
    if retention is not None:
        settings.retention = parse_duration(retention, "retention")
    if settings.max_model_response_bytes > MAX_MODEL_RESPONSE_BYTES_LIMIT:
        raise ConfigError(
            f"max-model-response-bytes must be at most {MAX_MODEL_RESPONSE_BYTES_LIMIT} "
            f"(4095 MiB), not {settings.max_model_response_bytes}"
        )
    _load_notification_settings(settings, flags, environ, file_values)
    model_log_retention = _first_given(flags, environ, file_values, "model_log_retention")
    if model_log_retention is not None:
        settings.model_log_retention = parse_duration(model_log_retention, "model_log_retention")
    insecure_ui = _first_given(flags, environ, file_values, "insecure_ui")
    if insecure_ui is not None:
        settings.insecure_ui = parse_bool(insecure_ui, "insecure_ui")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("tls-cert and tls-key go together: give both or neither")
    for name in ("tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name.replace('_', '-')}: {path} is not a readable file")
    if settings.max_instances is not None and settings.max_instances < 0:
        raise ConfigError(f"max-instances must be 0 or more, not {settings.max_instances}")
    if not 1 <= settings.time_scale <= 3600:
        raise ConfigError(f"time-scale must be between 1 and 3600, not {settings.time_scale:g}")
    if not 1 <= settings.worker_timeout <= 3600:
        raise ConfigError(
            f"worker-timeout must be between 1 and 3600 seconds, not {settings.worker_timeout:g}"
        )
    for item in file_values.get("access_keys", []) or []:
        try:
            access_key = str(item["AccessKeyId"])
            settings.access_keys[access_key] = str(item["SecretAccessKey"])
        except (KeyError, TypeError):
            raise ConfigError("access_keys entries need AccessKeyId and SecretAccessKey") from None
        if item.get("Policy") is not None:
            settings.key_policies[access_key] = item["Policy"]
        settings.key_users[access_key] = str(item.get("UserName") or access_key)
    for key in _RESOURCE_KEYS:
        value = file_values.get(key) or []
        if not isinstance(value, list):
            raise ConfigError(f"{key} in the config file must be a list")
        settings.resources[key] = value
    buckets = file_values.get("Buckets") or []
    if not isinstance(buckets, list):
        raise ConfigError("Buckets in the config file must be a list")
    settings.buckets = buckets
    key_policies(settings)  # a policy that cannot be used stops the start here
    return settings


def _load_notification_settings(
    settings: Settings,
    flags: dict[str, Any],
    environ: dict[str, str],
    file_values: dict[str, Any],
) -> None:
    settings.notification_allow_hosts = _name_list(
        flags, environ, file_values, "notification_allow_hosts"
    )
    retry_for = _first_given(flags, environ, file_values, "notification_retry_for")
    if retry_for is not None:
        settings.notification_retry_for = parse_duration(retry_for, "notification_retry_for")
    secrets_by_topic = file_values.get("webhook_secrets") or {}
    if not isinstance(secrets_by_topic, dict) or not all(
        isinstance(topic, str) and isinstance(secret, str) and secret
        for topic, secret in secrets_by_topic.items()
    ):
        raise ConfigError(
            "webhook_secrets in the config file must map webhook URLs to non-empty secrets"
        )
    settings.webhook_secrets = dict(secrets_by_topic)


def _first_given(
    flags: dict[str, Any], environ: dict[str, str], file_values: dict[str, Any], name: str
) -> Any:
    for value in (flags.get(name), environ.get(env_var(name)), file_values.get(name)):
        if value is not None:
            return value
    return None


def _name_list(
    flags: dict[str, Any], environ: dict[str, str], file_values: dict[str, Any], name: str
) -> list[str]:
    """A list setting: comma-separated in a flag or variable, a list or string in the file."""
    value = _first_given(flags, environ, file_values, name)
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    raise ConfigError(f"{name.replace('_', '-')}: expected a comma-separated list, not {value!r}")


def parse_bool(value: Any, name: str) -> bool:
    """A switch from a flag (True), a variable or the file: true/false, yes/no, 1/0, on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name.replace('_', '-')}: expected true or false, not {value!r}")


def host_is_loopback(host: str) -> bool:
    """Whether a listen address is the loopback interface only (127.0.0.0/8, ::1,
    localhost); 0.0.0.0, :: and every other address are not."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_duration(value: Any, name: str) -> float:
    """Seconds from ``3600``, ``90s``, ``15m``, ``12h`` or ``7d``."""
    text = str(value).strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(
            f"{name.replace('_', '-')}: invalid duration {value!r} "
            "(a positive number of seconds, or with a unit: 90s, 15m, 12h, 7d)"
        )
    return seconds


def key_policies(settings: Settings) -> dict[str, KeyPolicy]:
    """The parsed policies of the config file's scoped keys; raises ConfigError naming
    the key whose policy cannot be used."""
    policies: dict[str, KeyPolicy] = {}
    for access_key, document in settings.key_policies.items():
        principal = user_arn(settings.account_id, settings.key_users.get(access_key, access_key))
        try:
            policies[access_key] = parse_policy(document, principal)
        except PolicyError as exc:
            raise ConfigError(f"access_keys: the Policy of {access_key}: {exc}") from None
    return policies


def read_credentials(path: Path) -> dict[str, str]:
    """Every profile's key pair in an AWS shared-credentials file."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text())
    except configparser.Error as exc:
        raise ConfigError(f"credentials file {path} is not valid INI: {exc}") from None
    keys: dict[str, str] = {}
    for section in parser.sections():
        access = parser.get(section, "aws_access_key_id", fallback=None)
        secret = parser.get(section, "aws_secret_access_key", fallback=None)
        if access and secret:
            keys[access.strip()] = secret.strip()
    return keys


def generate_credentials(path: Path) -> dict[str, str]:
    """Write a fresh random key pair under profile ``sagequeue``, mode 0600."""
    alphabet = string.ascii_uppercase + string.digits
    access_key = "SQ" + "".join(secrets.choice(alphabet) for _ in range(18))
    secret_key = secrets.token_urlsafe(30)[:40]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"[{CREDENTIALS_PROFILE}]\n"
        f"aws_access_key_id = {access_key}\n"
        f"aws_secret_access_key = {secret_key}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return {access_key: secret_key}


def load_access_keys(settings: Settings) -> tuple[dict[str, str], bool]:
    """Keys to accept, and whether they were generated just now."""
    keys = dict(settings.access_keys)
    path = settings.credentials_path
    if path.exists():
        keys.update(read_credentials(path))
        return keys, False
    if keys and settings.credentials_file is None:
        return keys, False
    if settings.credentials_file is not None:
        raise ConfigError(f"credentials file {path} does not exist")
    try:
        keys.update(generate_credentials(path))
    except FileExistsError:  # another process of this data dir won the race
        keys.update(read_credentials(path))
        return keys, False
    return keys, True
