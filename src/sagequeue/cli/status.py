"""``sagequeue status`` and ``sagequeue top``: the endpoints at a glance in a terminal.

A rich table of every endpoint (status, instances running / desired, backlog, request
rates, model latency percentiles), read through the public APIs the way any client reads
them: ListEndpoints and DescribeEndpoint from the control plane, and one GetMetricData
call to CloudWatch for the metrics. Credentials, region and endpoint URL follow the AWS
CLI's conventions, as ``invoke-endpoint-async`` does (``cli/aws.py``). ``top`` redraws
the table until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sagequeue.cli.aws import (
    SUCCESS_RC,
    CliContext,
    UsageError,
    _ArgumentParser,
    add_global_options,
    make_context,
    version_string,
)

MINUTE = 60
MAX_QUERIES = 500  # GetMetricData's limit per call


@dataclass
class VariantRow:
    name: str
    running: int
    desired: int
    invocations_per_minute: float = 0.0
    processed_per_minute: float = 0.0
    failed_per_minute: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    backlog_p99_ms: float | None = None


@dataclass
class EndpointRow:
    name: str
    status: str
    running: int = 0
    desired: int = 0
    backlog: float | None = None
    invocations_per_minute: float = 0.0
    processed_per_minute: float = 0.0
    failed_per_minute: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    backlog_p99_ms: float | None = None
    variants: list[VariantRow] = field(default_factory=list)


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog=f"sagequeue {command}", add_help=False)
    add_global_options(parser)
    parser.add_argument("--window", type=int, default=5)
    if command == "top":
        parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("-h", "--help", action="store_true")
    return parser


HELP = """usage: sagequeue {command} [--window MINUTES]{interval} [global options]

{what}

Columns: status; instances running / desired (all variants); backlog (requests queued or
running); invocations accepted, processed and failed per minute over the last --window
minutes (default 5); ModelLatency p50 / p99 and TimeInBacklog p99 of the latest minute with
data. An endpoint with several variants gets a line per variant under it.

Credentials, region and --endpoint-url as for invoke-endpoint-async (the AWS CLI's sources;
the endpoint defaults to http://127.0.0.1:8765 or SAGEQUEUE_ENDPOINT_URL). --output json
prints the rows as JSON instead of a table.
"""


def main(command: str, argv: list[str]) -> int:
    args = build_parser(command).parse_args(argv)
    if args.help:
        sys.stdout.write(
            HELP.format(
                command=command,
                interval=" [--interval S]" if command == "top" else "",
                what="Redraws the endpoints table every --interval seconds (default 2) until "
                "Ctrl-C."
                if command == "top"
                else "Prints a table of every endpoint.",
            )
        )
        return SUCCESS_RC
    if args.version:
        sys.stdout.write(version_string() + "\n")
        return SUCCESS_RC
    if not 1 <= args.window <= 60:
        raise UsageError("argument --window: must be between 1 and 60 minutes")
    context = make_context(args)
    if command == "top":
        if not args.interval > 0:
            raise UsageError("argument --interval: must be positive")
        return run_top(context, args.window, args.interval)
    rows = collect(context, args.window)
    if args.output == "json":  # the table unless JSON is asked for on the command line
        sys.stdout.write(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    else:
        from rich.console import Console

        width = None if sys.stdout.isatty() else 160  # a pipe gets every column
        Console(color_system=None if context.color == "off" else "auto", width=width).print(
            render(rows)
        )
    return SUCCESS_RC


def run_top(context: CliContext, window: int, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console(color_system=None if context.color == "off" else "auto")
    try:
        with Live(console=console, auto_refresh=False, screen=console.is_terminal) as live:
            while True:
                table = render(collect(context, window), live=True)
                live.update(table, refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return SUCCESS_RC  # Ctrl-C is how top ends


# -- reading the server ----------------------------------------------------------------------


def collect(context: CliContext, window: int, now: float | None = None) -> list[EndpointRow]:
    sagemaker = context.create_client("sagemaker")
    cloudwatch = context.create_client("cloudwatch")
    summaries: list[dict[str, Any]] = []
    for page in sagemaker.get_paginator("list_endpoints").paginate(
        SortBy="Name", SortOrder="Ascending"
    ):
        summaries += page["Endpoints"]
    rows = []
    for summary in summaries:
        name = summary["EndpointName"]
        try:
            detail = sagemaker.describe_endpoint(EndpointName=name)
        except sagemaker.exceptions.ClientError:
            continue  # deleted meanwhile
        row = EndpointRow(name=name, status=detail["EndpointStatus"])
        for variant in detail.get("ProductionVariants") or []:
            row.variants.append(
                VariantRow(
                    name=variant["VariantName"],
                    running=int(variant.get("CurrentInstanceCount") or 0),
                    desired=int(variant.get("DesiredInstanceCount") or 0),
                )
            )
        row.running = sum(v.running for v in row.variants)
        row.desired = sum(v.desired for v in row.variants)
        rows.append(row)
    add_metrics(cloudwatch, rows, window, time.time() if now is None else now)
    return rows


def _query(query_id: str, metric: str, dimensions: dict[str, str], stat: str) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/SageMaker",
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            },
            "Period": MINUTE,
            "Stat": stat,
        },
    }


# (query name, metric, statistic, VariantRow field, how the minutes combine)
_VARIANT_QUERIES = (
    ("inv", "Invocations", "Sum", "invocations_per_minute", "rate"),
    ("done", "InvocationsProcessed", "Sum", "processed_per_minute", "rate"),
    ("fail", "InvocationFailures", "Sum", "failed_per_minute", "rate"),
    ("lat50", "ModelLatency", "p50", "latency_p50_ms", "latest_us"),
    ("lat99", "ModelLatency", "p99", "latency_p99_ms", "latest_us"),
    ("wait99", "TimeInBacklog", "p99", "backlog_p99_ms", "latest"),
)


def add_metrics(cloudwatch: Any, rows: list[EndpointRow], window: int, now: float) -> None:
    """Fill the rows' metrics from one GetMetricData (a few if there are many endpoints)."""
    current_minute = int(now) // MINUTE * MINUTE
    start = current_minute - (window - 1) * MINUTE
    # The current minute counts for the part of it that has passed.
    elapsed_minutes = max((now - start) / MINUTE, 1 / 60)
    queries: list[dict[str, Any]] = []
    targets: dict[str, tuple[Any, str, str]] = {}
    for i, row in enumerate(rows):
        queries.append(
            _query(f"b{i}", "ApproximateBacklogSize", {"EndpointName": row.name}, "Maximum")
        )
        targets[f"b{i}"] = (row, "backlog", "latest")
        for j, variant in enumerate(row.variants):
            dimensions = {"EndpointName": row.name, "VariantName": variant.name}
            for key, metric, stat, attribute, how in _VARIANT_QUERIES:
                query_id = f"{key}{i}x{j}"
                queries.append(_query(query_id, metric, dimensions, stat))
                targets[query_id] = (variant, attribute, how)
    for begin in range(0, len(queries), MAX_QUERIES):
        results = cloudwatch.get_metric_data(
            MetricDataQueries=queries[begin : begin + MAX_QUERIES],
            StartTime=start,
            EndTime=current_minute + MINUTE,
            ScanBy="TimestampDescending",
        )["MetricDataResults"]
        for result in results:
            target, attribute, how = targets[result["Id"]]
            values = result.get("Values") or []
            if how == "rate":
                setattr(target, attribute, sum(values) / elapsed_minutes)
            elif values:  # newest first
                value = values[0] / 1000 if how == "latest_us" else values[0]
                setattr(target, attribute, value)
    for row in rows:
        for attribute in ("invocations_per_minute", "processed_per_minute", "failed_per_minute"):
            setattr(row, attribute, sum(getattr(v, attribute) for v in row.variants))
        if len(row.variants) == 1:
            (only,) = row.variants
            row.latency_p50_ms = only.latency_p50_ms
            row.latency_p99_ms = only.latency_p99_ms
            row.backlog_p99_ms = only.backlog_p99_ms


# -- rendering -------------------------------------------------------------------------------

_STATUS_STYLES = {
    "InService": "green",
    "Failed": "bold red",
    "OutOfService": "red",
    "Creating": "yellow",
    "Updating": "yellow",
    "SystemUpdating": "yellow",
    "RollingBack": "yellow",
    "Deleting": "yellow",
}


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if value == int(value) and abs(value) >= 10:
        return str(int(value))
    return f"{value:.{digits}f}"


def render(rows: list[EndpointRow], *, live: bool = False) -> Any:
    from rich.table import Table
    from rich.text import Text

    title = "sagequeue endpoints"
    if live:
        title += time.strftime("  %H:%M:%S  (Ctrl-C to quit)")
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("Endpoint", no_wrap=True)
    table.add_column("Status")
    table.add_column("Instances", justify="right")
    table.add_column("Backlog", justify="right")
    table.add_column("In/min", justify="right")
    table.add_column("Done/min", justify="right")
    table.add_column("Failed/min", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("Wait p99 ms", justify="right")
    if not rows:
        table.add_row("(no endpoints)", *[""] * 9)
    for row in rows:
        table.add_row(
            row.name,
            Text(row.status, style=_STATUS_STYLES.get(row.status, "")),
            f"{row.running}/{row.desired}",
            _number(row.backlog, 0),
            _number(row.invocations_per_minute),
            _number(row.processed_per_minute),
            Text(
                _number(row.failed_per_minute),
                style="red" if row.failed_per_minute > 0 else "",
            ),
            _number(row.latency_p50_ms),
            _number(row.latency_p99_ms),
            _number(row.backlog_p99_ms),
        )
        if len(row.variants) > 1:
            for variant in row.variants:
                table.add_row(
                    Text(f"  └ {variant.name}", style="dim"),
                    "",
                    f"{variant.running}/{variant.desired}",
                    "",
                    _number(variant.invocations_per_minute),
                    _number(variant.processed_per_minute),
                    _number(variant.failed_per_minute),
                    _number(variant.latency_p50_ms),
                    _number(variant.latency_p99_ms),
                    _number(variant.backlog_p99_ms),
                )
    return table
