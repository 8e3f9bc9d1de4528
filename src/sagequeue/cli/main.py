"""``sagequeue`` console entry point: dispatches to the sub-commands."""

from __future__ import annotations

import sys

USAGE = """usage: sagequeue <command> [options]

commands:
  serve                    run the server (front door, queue, model instances)
  invoke-endpoint-async    the AWS CLI's sagemaker-runtime invoke-endpoint-async
  wait                     wait for an async inference to finish and fetch its result
  status                   a table of the endpoints: status, instances, backlog, rates, latencies
  top                      the same table, refreshed until Ctrl-C

`sagequeue <command> --help` describes a command's options.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "--version":
        from sagequeue import __version__

        print(f"sagequeue {__version__}")
        return 0
    if command == "serve":
        from sagequeue.cli.serve import main as serve_main

        return serve_main(rest)
    if command in ("invoke-endpoint-async", "wait", "status", "top"):
        from sagequeue.cli.aws import main as aws_main

        return aws_main(command, rest)
    sys.stderr.write(f"sagequeue: unknown command {command!r}\n\n{USAGE}")
    return 2
