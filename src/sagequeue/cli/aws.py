"""``sagequeue invoke-endpoint-async`` and ``sagequeue wait``: AWS CLI v2 behaviour on botocore.

Exit codes follow AWS CLI v2 (0, 130, 252, 253, 254, 255); ``wait`` adds WAIT_FAILED_RC and
WAIT_EXPIRED_RC (docs/cli.md).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, overload

import botocore
import botocore.session
import jmespath
import jmespath.exceptions
import yaml
from botocore import UNSIGNED, xform_name
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConfigParseError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.model import OperationModel
from botocore.stub import Stubber

from sagequeue import __version__
from sagequeue.cli import awsoutput, awstable, skeleton

LOG = logging.getLogger("sagequeue.cli")

SUCCESS_RC = 0
INTERRUPTED_RC = 130
PARAM_VALIDATION_ERROR_RC = 252
CONFIGURATION_ERROR_RC = 253
CLIENT_ERROR_RC = 254
GENERAL_ERROR_RC = 255

DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8765"
DEFAULT_REGION = "us-east-1"
SERVICE = "sagemaker-runtime"
OPERATION = "InvokeEndpointAsync"

USAGE = """usage: sagequeue [options] <command> [parameters]
To see help text, you can run:

  sagequeue help
  sagequeue <command> --help

"""


class UsageError(Exception):
    """Invalid command line: exit 252 after the usage text, like the AWS CLI's argparse errors."""


class ParamError(Exception):
    """A parameter value the CLI rejects before any request (exit 252)."""


class ConfigurationError(Exception):
    """Invalid environment or configuration (exit 253)."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class CliParameter:
    """One operation member as a command-line option (``--request-ttl-seconds``)."""

    member: str
    option: str
    type_name: str
    required: bool


def operation_model() -> OperationModel:
    session = botocore.session.get_session()
    return session.get_service_model(SERVICE).operation_model(OPERATION)


def cli_parameters(operation: OperationModel) -> list[CliParameter]:
    shape = skeleton.input_shape(operation)
    return [
        CliParameter(
            member=name,
            option="--" + xform_name(name, "-"),
            type_name=member.type_name,
            required=name in shape.required_members,
        )
        for name, member in shape.members.items()
    ]


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--endpoint-url")
    parser.add_argument("--no-verify-ssl", action="store_false", dest="verify_ssl", default=True)
    parser.add_argument("--no-paginate", action="store_false", dest="paginate", default=True)
    parser.add_argument("--output", choices=awsoutput.OUTPUT_FORMATS)
    parser.add_argument("--query")
    parser.add_argument("--profile")
    parser.add_argument("--region")
    parser.add_argument("--version", action="store_true")
    parser.add_argument("--color", choices=("on", "off", "auto"), default="auto")
    parser.add_argument("--no-sign-request", action="store_false", dest="sign_request")
    parser.add_argument("--ca-bundle")
    parser.add_argument("--cli-read-timeout", type=int)
    parser.add_argument("--cli-connect-timeout", type=int)
    parser.add_argument("--cli-binary-format", choices=("base64", "raw-in-base64-out"))
    parser.add_argument("--no-cli-pager", action="store_false", dest="cli_pager", default=True)
    parser.add_argument("--cli-auto-prompt", action="store_true", default=None)
    parser.add_argument("--no-cli-auto-prompt", action="store_false", dest="cli_auto_prompt")


def build_invoke_parser(parameters: list[CliParameter]) -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="sagequeue invoke-endpoint-async", add_help=False)
    add_global_options(parser)
    for parameter in parameters:
        parser.add_argument(parameter.option, dest=parameter.member)
    parser.add_argument("--cli-input-json")
    parser.add_argument("--cli-input-yaml")
    parser.add_argument(
        "--generate-cli-skeleton",
        nargs="?",
        const="input",
        choices=("input", "output", "yaml-input"),
    )
    parser.add_argument("--wait", action="store_true", help="wait for the result (sagequeue)")
    parser.add_argument("--timeout", type=float, help="with --wait: give up after S seconds")
    parser.add_argument("--output-file", help="with --wait: write the result here")
    parser.add_argument("--upload", help="upload this file to --input-location first (sagequeue)")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def build_wait_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="sagequeue wait", add_help=False)
    add_global_options(parser)
    parser.add_argument("--endpoint-name")
    parser.add_argument("--inference-id")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--output-file")
    parser.add_argument("--output-location", help="fallback when the server has no status call")
    parser.add_argument("--failure-location", help="fallback when the server has no status call")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("-h", "--help", action="store_true")
    return parser


# -- parameter values ------------------------------------------------------------------------


@overload
def read_param_file(value: str, binary_ok: Literal[False]) -> str: ...


@overload
def read_param_file(value: str, binary_ok: bool) -> str | bytes: ...


def read_param_file(value: str, binary_ok: bool) -> str | bytes:
    """``file://`` (text) and ``fileb://`` (bytes) prefixes, as the AWS CLI's paramfile."""
    if value.startswith("fileb://") and binary_ok:
        path = os.path.expanduser(value[len("fileb://") :])
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise ParamError(f"Unable to load paramfile {value}: {exc}") from exc
    if value.startswith("file://"):
        path = os.path.expanduser(value[len("file://") :])
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ParamError(f"Unable to load paramfile {value}: {exc}") from exc
    return value


def blob_value(value: str | bytes, binary_format: str) -> bytes:
    """A blob given as text: base64 by default in AWS CLI v2, raw with raw-in-base64-out."""
    if isinstance(value, bytes):
        return value
    if binary_format == "raw-in-base64-out":
        return value.encode("utf-8")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ParamError(f'Invalid base64: "{value}"') from exc


def convert_value(parameter: CliParameter, raw: str, binary_format: str) -> Any:
    if parameter.type_name == "blob":
        return blob_value(read_param_file(raw, binary_ok=True), binary_format)
    value = read_param_file(raw, binary_ok=False)
    if parameter.type_name in ("integer", "long"):
        try:
            return int(value.strip())
        except ValueError as exc:
            raise ParamError(f"Error parsing parameter '{parameter.option}': {exc}") from exc
    return value


def load_cli_input(args: argparse.Namespace) -> dict[str, Any]:
    if args.cli_input_json is not None and args.cli_input_yaml is not None:
        raise ParamError("Only one --cli-input-json or --cli-input-yaml may be specified.")
    if args.cli_input_json is not None:
        text = read_param_file(args.cli_input_json, binary_ok=False)
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ParamError(f"Invalid JSON: {exc}\nJSON received: {text}") from exc
        if not isinstance(loaded, dict):
            raise ParamError(f"Invalid type for --cli-input-json: expected an object: {text}")
        return loaded
    if args.cli_input_yaml is not None:
        text = read_param_file(args.cli_input_yaml, binary_ok=False)
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParamError(f"Invalid YAML: {exc}\nYAML received: {text}") from exc
        if not isinstance(loaded, dict):
            raise ParamError("Invalid type for --cli-input-yaml: expected a mapping")
        return loaded
    return {}


def build_call_parameters(
    args: argparse.Namespace, parameters: list[CliParameter], binary_format: str
) -> dict[str, Any]:
    """cli-input values first, then command-line options override them (AWS CLI precedence)."""
    call: dict[str, Any] = {}
    for key, value in load_cli_input(args).items():
        # Blob members in cli-input are text in the same binary format as the options.
        member = next((p for p in parameters if p.member == key), None)
        if member is not None and member.type_name == "blob" and isinstance(value, str):
            value = blob_value(value, binary_format)
        call[key] = value
    for parameter in parameters:
        raw = getattr(args, parameter.member)
        if raw is not None:
            call[parameter.member] = convert_value(parameter, raw, binary_format)
    return call


# -- session and client ----------------------------------------------------------------------


@dataclass
class CliContext:
    args: argparse.Namespace
    session: botocore.session.Session
    region: str
    endpoint_url: str
    verify: bool | str | None
    client_config: Config
    output: str
    query: jmespath.parser.ParsedResult | None
    binary_format: str
    color: str

    def create_client(self, service: str) -> Any:
        return self.session.create_client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            verify=self.verify,
            config=self.client_config,
        )


def make_context(args: argparse.Namespace) -> CliContext:
    session = botocore.session.Session(profile=args.profile)
    if args.debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s - %(threadName)s - %(name)s - %(levelname)s - %(message)s"
            )
        )
        for name in ("botocore", "sagequeue", "urllib3"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
        LOG.debug(
            "sagequeue %s, botocore %s, Python %s, arguments %s",
            __version__,
            botocore.__version__,
            platform.python_version(),
            sys.argv,
        )
    config_vars = session.get_scoped_config()  # raises ProfileNotFound (exit 253)
    output = (
        args.output or os.environ.get("AWS_DEFAULT_OUTPUT") or config_vars.get("output") or "json"
    )
    if output not in awsoutput.OUTPUT_FORMATS:
        raise ConfigurationError(
            f"Invalid output format {output!r}: valid values are "
            + ", ".join(awsoutput.OUTPUT_FORMATS)
        )
    explicit_endpoint = args.endpoint_url or os.environ.get("SAGEQUEUE_ENDPOINT_URL")
    endpoint_url = explicit_endpoint or DEFAULT_ENDPOINT_URL
    region = args.region or session.get_config_variable("region")
    if not region:
        if explicit_endpoint:
            raise NoRegionError()
        # The local default server signs in us-east-1; real AWS needs an explicit region.
        region = DEFAULT_REGION
    query = None
    if args.query is not None:
        try:
            query = jmespath.compile(args.query)
        except jmespath.exceptions.JMESPathError as exc:
            raise UsageError(f"argument --query: Bad value for --query: {args.query}") from exc
    verify: bool | str | None = args.ca_bundle or session.get_config_variable("ca_bundle")
    if not args.verify_ssl:
        verify = False
    config_kwargs: dict[str, Any] = {"retries": {"mode": "standard"}}
    for name, value in (
        ("read_timeout", args.cli_read_timeout),
        ("connect_timeout", args.cli_connect_timeout),
    ):
        if value is not None:
            # 0 means block forever, as in the AWS CLI.
            config_kwargs[name] = None if value == 0 else value
    if not args.sign_request:
        config_kwargs["signature_version"] = UNSIGNED
    binary_format = args.cli_binary_format or config_vars.get("cli_binary_format") or "base64"
    if binary_format not in ("base64", "raw-in-base64-out"):
        raise ConfigurationError(f"Invalid value for cli_binary_format: {binary_format}")
    color = args.color
    if color == "auto":
        color = "on" if awstable.is_a_tty() else "off"
    return CliContext(
        args=args,
        session=session,
        region=region,
        endpoint_url=endpoint_url,
        verify=verify,
        client_config=Config(**config_kwargs),
        output=output,
        query=query,
        binary_format=binary_format,
        color=color,
    )


def version_string() -> str:
    return (
        f"sagequeue/{__version__} Python/{platform.python_version()} "
        f"{platform.system()}/{platform.release()} botocore/{botocore.__version__}"
    )


# -- output ----------------------------------------------------------------------------------


def emit(context: CliContext, text: str) -> None:
    """Write command output, through the pager on a terminal (AWS_PAGER / cli_pager / less)."""
    if not text:
        return
    pager = pager_command(context)
    if pager and sys.stdout.isatty():
        env = dict(os.environ)
        env.setdefault("LESS", "FRX")
        process = subprocess.Popen(pager, shell=True, stdin=subprocess.PIPE, env=env)
        assert process.stdin is not None
        try:
            process.stdin.write(text.encode("utf-8"))
            process.stdin.close()
        except BrokenPipeError:
            pass
        process.wait()
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def pager_command(context: CliContext) -> str:
    if not context.args.cli_pager:
        return ""
    if "AWS_PAGER" in os.environ:
        return os.environ["AWS_PAGER"]
    configured: str | None = context.session.get_scoped_config().get("cli_pager")
    if configured is not None:
        return configured
    return "less"


# -- commands --------------------------------------------------------------------------------


def run_invoke(argv: list[str]) -> int:
    operation = operation_model()
    parameters = cli_parameters(operation)
    args = build_invoke_parser(parameters).parse_args(argv)
    if args.help:
        sys.stdout.write(invoke_help(parameters))
        return SUCCESS_RC
    if args.version:
        sys.stdout.write(version_string() + "\n")
        return SUCCESS_RC
    if args.generate_cli_skeleton == "input":
        sys.stdout.write(skeleton.input_skeleton_json(operation))
        return SUCCESS_RC
    if args.generate_cli_skeleton == "yaml-input":
        sys.stdout.write(skeleton.input_skeleton_yaml(operation))
        return SUCCESS_RC
    context = make_context(args)
    if prompt_enabled(args, context):
        from sagequeue.cli.prompt import prompt_for_parameters

        prompt_for_parameters(args, parameters)
    call = build_call_parameters(args, parameters, context.binary_format)
    missing = [p.option for p in parameters if p.required and p.member not in call]
    if missing:
        raise UsageError("the following arguments are required: " + ", ".join(missing))
    client = context.create_client(SERVICE)
    if args.upload is not None and args.generate_cli_skeleton != "output":
        from sagequeue.cli.upload import upload_input

        upload_input(context, args.upload, call.get("InputLocation"))
    if args.generate_cli_skeleton == "output":
        # Validate the inputs through botocore and answer from a stub: nothing is sent.
        with Stubber(client) as stubber:
            stubber.add_response("invoke_endpoint_async", skeleton.output_skeleton(operation))
            response = client.invoke_endpoint_async(**call)
    else:
        response = client.invoke_endpoint_async(**call)
    if not args.wait:
        emit(
            context,
            awsoutput.render(context.output, OPERATION, response, context.query, context.color),
        )
        return SUCCESS_RC
    from sagequeue.cli.waiting import wait_for_result

    return wait_for_result(
        context,
        endpoint_name=call["EndpointName"],
        inference_id=response["InferenceId"],
        output_location=response.get("OutputLocation"),
        failure_location=response.get("FailureLocation"),
        timeout=args.timeout,
        output_file=args.output_file,
    )


def run_wait(argv: list[str]) -> int:
    args = build_wait_parser().parse_args(argv)
    if args.help:
        sys.stdout.write(WAIT_HELP)
        return SUCCESS_RC
    if args.version:
        sys.stdout.write(version_string() + "\n")
        return SUCCESS_RC
    missing = [
        option
        for option, value in (
            ("--endpoint-name", args.endpoint_name),
            ("--inference-id", args.inference_id),
        )
        if value is None
    ]
    if missing:
        raise UsageError("the following arguments are required: " + ", ".join(missing))
    context = make_context(args)
    from sagequeue.cli.waiting import wait_for_result

    return wait_for_result(
        context,
        endpoint_name=args.endpoint_name,
        inference_id=args.inference_id,
        output_location=args.output_location,
        failure_location=args.failure_location,
        timeout=args.timeout,
        output_file=args.output_file,
        poll_interval=args.poll_interval,
    )


def prompt_enabled(args: argparse.Namespace, context: CliContext) -> bool:
    if args.cli_auto_prompt is not None:
        enabled = args.cli_auto_prompt
    else:
        setting = os.environ.get("AWS_CLI_AUTO_PROMPT") or context.session.get_scoped_config().get(
            "cli_auto_prompt", "off"
        )
        enabled = setting in ("on", "on-partial")
    return bool(enabled) and sys.stdin.isatty()


def invoke_help(parameters: list[CliParameter]) -> str:
    lines = [
        "usage: sagequeue invoke-endpoint-async [global options] [parameters]",
        "",
        "parameters (as in aws sagemaker-runtime invoke-endpoint-async):",
    ]
    for parameter in parameters:
        required = " (required)" if parameter.required else ""
        lines.append(f"  {parameter.option} <{parameter.type_name}>{required}")
    lines += [
        "  --cli-input-json | --cli-input-yaml <string>",
        "  --generate-cli-skeleton [input | yaml-input | output]",
        "  --wait [--timeout S] [--output-file F]   wait for the result (sagequeue extension)",
        "  --upload FILE   upload FILE to --input-location first, with progress on a terminal",
        "                  (sagequeue extension)",
        "",
        "global options: --debug --endpoint-url --no-verify-ssl --no-paginate --output --query",
        "  --profile --region --version --color --no-sign-request --ca-bundle",
        "  --cli-read-timeout --cli-connect-timeout --cli-binary-format --no-cli-pager",
        "  --cli-auto-prompt --no-cli-auto-prompt",
        "",
    ]
    return "\n".join(lines)


WAIT_HELP = """usage: sagequeue wait --endpoint-name N --inference-id I [--timeout S]
                      [--output-file F] [--output-location S3URI]
                      [--failure-location S3URI] [global options]

Waits for an async inference to end, shows progress on a terminal, then writes the result to
--output-file (or stdout) or prints the failure reason. Exit codes: 0 completed, 10 failed,
11 expired, 12 still pending after --timeout (see docs/cli.md).
"""


# -- entry point and error handling ----------------------------------------------------------


def main(command: str, argv: list[str]) -> int:
    """Run ``invoke-endpoint-async``, ``wait``, ``status`` or ``top``; return the AWS CLI v2
    exit code."""
    try:
        if command == "wait":
            return run_wait(argv)
        if command in ("status", "top"):
            from sagequeue.cli.status import main as status_main

            return status_main(command, argv)
        return run_invoke(argv)
    except UsageError as exc:
        sys.stderr.write(f"\n{USAGE}sagequeue: error: {exc}\n")
        return PARAM_VALIDATION_ERROR_RC
    except (ParamError, ParamValidationError) as exc:
        sys.stderr.write(f"\n{exc}\n")
        return PARAM_VALIDATION_ERROR_RC
    except NoRegionError:
        sys.stderr.write(
            "\nYou must specify a region. You can also configure your region by running "
            '"aws configure".\n'
        )
        return CONFIGURATION_ERROR_RC
    except NoCredentialsError:
        sys.stderr.write(
            "\nUnable to locate credentials. You can configure credentials by running "
            '"aws configure".\n'
        )
        return CONFIGURATION_ERROR_RC
    except (ProfileNotFound, ConfigParseError, PartialCredentialsError, ConfigurationError) as exc:
        sys.stderr.write(f"\n{exc}\n")
        return CONFIGURATION_ERROR_RC
    except ClientError as exc:
        sys.stderr.write(f"\n{exc}\n")
        return CLIENT_ERROR_RC
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return INTERRUPTED_RC
    except Exception as exc:
        LOG.debug("Exception caught in main()", exc_info=True)
        sys.stderr.write(f"\n{exc}\n")
        return GENERAL_ERROR_RC
