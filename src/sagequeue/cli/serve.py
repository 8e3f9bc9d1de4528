"""``sagequeue serve``."""

from __future__ import annotations

import argparse
import sys

from sagequeue.config import ROLES, ConfigError, load_settings
from sagequeue.domain.errors import StartupError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sagequeue serve",
        description="Run sagequeue. Every flag also reads a SAGEQUEUE_* environment "
        "variable (e.g. --data-dir from SAGEQUEUE_DATA_DIR) and a key of the config file.",
    )
    parser.add_argument("--config", help="YAML config file (also SAGEQUEUE_CONFIG)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8765)")
    parser.add_argument("--data-dir", help="state directory (default ./.sagequeue)")
    parser.add_argument(
        "--database",
        help="sqlite:///path (default <data-dir>/sagequeue.db) or "
        "postgresql://user:password@host:5432/db",
    )
    parser.add_argument("--object-store", help="file:///path (default <data-dir>/objects) or s3://")
    parser.add_argument("--s3-endpoint-url", help="S3-compatible endpoint for s3:// stores")
    parser.add_argument(
        "--credentials-file",
        help="AWS shared-credentials file whose key pairs are accepted "
        "(default <data-dir>/credentials, generated when missing)",
    )
    parser.add_argument("--role", choices=ROLES, help="all (default), api or worker")
    parser.add_argument("--region", help="region in ARNs (default us-east-1)")
    parser.add_argument("--account-id", help="account id in ARNs (default 000000000000)")
    parser.add_argument(
        "--https-input-allow-hosts",
        help="comma-separated hosts from which https:// InputLocations may be fetched",
    )
    parser.add_argument(
        "--max-instances",
        type=int,
        help="model instances this worker process may run, over all endpoints (default: no limit)",
    )
    parser.add_argument(
        "--endpoints",
        help="comma-separated endpoint names this worker serves (default: all)",
    )
    parser.add_argument(
        "--worker-timeout",
        type=float,
        help="seconds after which a worker that stopped heartbeating is gone and its "
        "instances and requests move to live workers (default 10)",
    )
    parser.add_argument(
        "--retention",
        help="how long finished invocations stay in the queue store before they are "
        "purged: seconds or 90s, 15m, 12h, 7d (default 7d); output objects are never deleted",
    )
    parser.add_argument(
        "--model-log-retention",
        help="how long model logs (the CloudWatch Logs API) are kept: seconds or 90s, 15m, "
        "12h, 7d (default 7d)",
    )
    parser.add_argument(
        "--model-log-max-bytes",
        help="the most model log text kept, in bytes; the oldest go first (default 1073741824)",
    )
    parser.add_argument(
        "--container-startup-timeout",
        type=float,
        help="seconds an http(s):// model container has to answer GET /ping at start (default 30)",
    )
    parser.add_argument(
        "--container-allow-hosts",
        help="comma-separated hosts that http(s):// model container Images may name "
        "(loopback is allowed by default when listening on loopback)",
    )
    parser.add_argument("--log-level", help="debug, info (default), warning, error")
    parser.add_argument(
        "--max-model-response-bytes",
        help="largest model response a worker takes; a larger one fails the request "
        "(default 1073741824, SageMaker's 1 GB)",
    )
    parser.add_argument(
        "--failure-write-timeout",
        help="seconds a worker retries writing a failure object before the request goes "
        "back to the queue (default 60)",
    )
    parser.add_argument(
        "--metrics-token",
        help="bearer token that GET /metrics takes from clients not on loopback "
        "(a SigV4-signed request works too; see docs/metrics.md)",
    )
    parser.add_argument(
        "--time-scale",
        help="run CloudWatch and Application Auto Scaling time this many times faster "
        "(periods, alarm evaluation, cooldowns) for tests and demos (default 1)",
    )
    tls = parser.add_argument_group("TLS and the web console (see docs/console.md)")
    tls.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS with")
    tls.add_argument("--tls-key", help="PEM private key of --tls-cert")
    tls.add_argument(
        "--insecure-ui",
        action="store_true",
        default=None,
        help="serve the web console at /ui over plain HTTP on a non-loopback address "
        "(without it, the console needs --tls-cert / --tls-key there)",
    )
    notify = parser.add_argument_group("notifications (see docs/notifications.md)")
    notify.add_argument(
        "--sns-endpoint-url",
        help="SNS endpoint that SNS topic notifications are published to (default: AWS)",
    )
    notify.add_argument(
        "--notification-allow-hosts",
        help="comma-separated hosts that http(s):// webhook topics may name "
        "(loopback is allowed by default when listening on loopback)",
    )
    notify.add_argument(
        "--notification-retry-for",
        help="how long failed notification deliveries are retried before they count as "
        "failed: seconds or 90s, 15m, 12h (default 1h)",
    )
    limits = parser.add_argument_group(
        "HTTP limits (enforced before authentication; see docs/security.md)"
    )
    limits.add_argument(
        "--max-header-bytes", help="request line and headers, bytes (default 65536; 431 beyond)"
    )
    limits.add_argument(
        "--max-header-count", help="header fields per request (default 256; 431 beyond)"
    )
    limits.add_argument("--header-timeout", help="seconds to receive a request's head (default 20)")
    limits.add_argument(
        "--keep-alive-timeout", help="seconds an idle connection is kept open (default 5)"
    )
    limits.add_argument(
        "--body-timeout",
        help="seconds without a byte while a request body is received (default 30)",
    )
    limits.add_argument(
        "--max-connections",
        help="open connections; further ones are answered 503 and closed (default 1024)",
    )
    limits.add_argument(
        "--max-control-body", help="control-plane request body, bytes (default 1048576)"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        settings = load_settings(flags, args.config)
    except ConfigError as exc:
        print(f"sagequeue serve: {exc}", file=sys.stderr)
        return 2
    from sagequeue.cli.logs import configure_logging

    redact = configure_logging(settings.log_level, settings.access_keys.values())
    from sagequeue.app import run_server

    try:
        return run_server(settings, on_secrets=redact.add_secrets)
    except StartupError as exc:  # a bad setting, or a database that cannot be used
        print(f"sagequeue serve: {exc}", file=sys.stderr)
        return 2
