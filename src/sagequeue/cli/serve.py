"""``sagequeue serve``."""

from __future__ import annotations

import argparse
import logging
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
    parser.add_argument("--log-level", help="debug, info (default), warning, error")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        settings = load_settings(flags, args.config)
    except ConfigError as exc:
        print(f"sagequeue serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from sagequeue.app import run_server

    try:
        return run_server(settings)
    except StartupError as exc:  # a bad setting, or a database that cannot be used
        print(f"sagequeue serve: {exc}", file=sys.stderr)
        return 2
