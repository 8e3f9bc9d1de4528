"""Run an independent S3 conformance suite, ceph/s3-tests, against sagequeue and against
moto's server, the same way, and compare them.

    python -m bench.s3conformance /path/to/s3-tests [-k EXPR] [--server sagequeue]

The suite is not part of this repository: give the path of a checkout (its
``s3tests_boto3/functional/test_s3.py`` runs unchanged with pytest; it needs ``isodate``
and ``pytz`` besides boto3). Each server starts on 127.0.0.1 with a fresh data
directory, an ``s3tests.conf`` points the suite at it (main user only), and the result
is read from pytest's JUnit XML. Printed: pass / fail / error / skip counts per server,
sagequeue's failures grouped by feature, and the tests where the two servers differ.
The run is bounded (a per-test timeout and an overall one).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAMES = {"sagequeue": "sagequeue", "moto": "webfile"}
PER_TEST_TIMEOUT = 120
SUITE_TIMEOUT = 3600
# Test-name fragments -> feature, first match wins.
FEATURES = [
    ("listing", ("bucket_list", "bucket_listv2", "list_objects", "key_count", "_list_")),
    ("multipart", ("multipart",)),
    ("copy", ("copy",)),
    ("cors", ("cors",)),
    ("tagging", ("tagging", "_tags")),
    ("checksums", ("checksum",)),
    ("object attributes", ("attributes",)),
    ("conditional requests", ("if_match", "ifmatch", "if_none", "ifnonematch", "modified")),
    ("encryption", ("encrypt", "sse")),
    ("ACLs", ("acl",)),
    ("versioning", ("version",)),
    ("authentication", ("auth", "presign", "signature", "anonymous", "expire")),
    ("ranges", ("range",)),
    ("metadata and headers", ("metadata", "header", "content_", "expect")),
    ("buckets", ("bucket_create", "bucket_head", "bucket_delete", "buckets", "bucket_")),
    ("objects", ("object", "get_", "put_", "delete")),
]


@dataclass
class Result:
    server: str
    # test -> passed | failed | error | skipped | teardown-error
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


def feature_of(test: str) -> str:
    name = test.removeprefix("test_")
    for feature, fragments in FEATURES:
        if any(fragment in f"_{name}_" or fragment in name for fragment in fragments):
            return feature
    return "other"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def sagequeue_server(work: Path) -> Iterator[tuple[int, str, str]]:
    port = _free_port()
    data_dir = work / "sagequeue-data"
    log = (work / "sagequeue.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "SAGEQUEUE_CONFIG"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sagequeue",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("sagequeue did not start; see sagequeue.log") from None
                time.sleep(0.1)
        credentials = configparser.RawConfigParser()
        credentials.read(data_dir / "credentials")
        yield (
            port,
            credentials.get("sagequeue", "aws_access_key_id"),
            credentials.get("sagequeue", "aws_secret_access_key"),
        )
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextmanager
def moto_server(work: Path) -> Iterator[tuple[int, str, str]]:
    port = _free_port()
    log = (work / "moto.log").open("wb")
    executable = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_port(port, process)
        yield port, "AKIAMOTOCONFORMANCE", "moto-conformance-secret"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def write_config(
    path: Path, port: int, access: str, secret: str, display_name: str = "main"
) -> None:
    config = configparser.RawConfigParser()
    config["DEFAULT"] = {"host": "127.0.0.1", "port": str(port), "is_secure": "False"}
    config["fixtures"] = {"bucket prefix": "s3t-{random}-"}
    for section, name in (("s3 main", "main"), ("s3 alt", "alt"), ("s3 tenant", "tenant")):
        config[section] = {
            "display_name": display_name if name == "main" else name,
            "user_id": OWNER_ID if name == "main" else f"{name}-user",
            "email": f"{name}@example.com",
            "access_key": access if name == "main" else f"{name}-access",
            "secret_key": secret if name == "main" else f"{name}-secret",
        }
    with path.open("w") as out:
        config.write(out)


def run_suite(
    server: str, checkout: Path, work: Path, port: int, access: str, secret: str, keyword: str
) -> Result:
    conf = work / f"{server}.conf"
    # The main user as each server names its one account owner.
    write_config(conf, port, access, secret, OWNER_NAMES[server])
    junit = work / f"{server}.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(checkout / "s3tests_boto3" / "functional" / "test_s3.py"),
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        f"--junitxml={junit}",
        f"--timeout={PER_TEST_TIMEOUT}",
        f"--rootdir={checkout}",
    ]
    if keyword:
        command += ["-k", keyword]
    env = {**os.environ, "S3TEST_CONF": str(conf)}
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(name, None)
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    with (work / f"{server}-pytest.log").open("wb") as log:
        subprocess.run(
            command,
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=SUITE_TIMEOUT,
        )
    return parse_junit(server, junit)


def parse_junit(server: str, path: Path) -> Result:
    """Outcome per test. pytest writes a test whose clean-up failed as two testcase
    elements (the call, then the teardown error); a test whose body passed but whose
    clean-up (the suite's teardown, which deletes every version and then the bucket)
    failed counts as ``teardown-error``: the server failed the suite's clean-up, not
    that test."""
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag not in ("failure", "error", "skipped"):
                continue
            text = child.get("message") or ""
            outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
            if outcome == "error" and text.startswith("failed on teardown"):
                outcome = "teardown-error"
            message = (text.splitlines() or [""])[0][:160]
            break
        seen[name].append((outcome, message))
    result = Result(server)
    ranking = ("failed", "error", "teardown-error", "skipped", "passed")
    for name, outcomes in seen.items():
        outcome, message = min(outcomes, key=lambda item: ranking.index(item[0]))
        result.outcomes[name] = outcome
        result.messages[name] = message
    return result


def report(results: dict[str, Result]) -> dict:
    summary: dict = {"servers": {}}
    print(
        f"{'server':<12}{'passed':>8}{'failed':>8}{'errors':>8}{'skipped':>9}{'total':>8}"
        "   (passed, but the suite's clean-up failed)"
    )
    for name, result in results.items():
        counts = {
            o: result.count(o) for o in ("passed", "failed", "error", "skipped", "teardown-error")
        }
        summary["servers"][name] = counts
        print(
            f"{name:<12}{counts['passed']:>8}{counts['failed']:>8}{counts['error']:>8}"
            f"{counts['skipped']:>9}{len(result.outcomes):>8}   ({counts['teardown-error']})"
        )
    ours = results.get("sagequeue")
    if ours is not None:
        failing = [
            t for t, o in ours.outcomes.items() if o in ("failed", "error", "teardown-error")
        ]
        by_feature: dict[str, list[str]] = defaultdict(list)
        for test in sorted(failing):
            by_feature[feature_of(test)].append(test)
        summary["sagequeue_failures"] = by_feature
        print(f"\nsagequeue failures by feature ({len(failing)}):")
        for feature in sorted(by_feature, key=lambda f: -len(by_feature[f])):
            print(f"  {feature} ({len(by_feature[feature])})")
            for test in by_feature[feature]:
                print(f"    {test}: {ours.messages.get(test, '')}")
    moto = results.get("moto")
    if ours is not None and moto is not None:
        body_passed = ("passed", "teardown-error")  # the test's own assertions held
        only_moto = sorted(
            t
            for t, o in moto.outcomes.items()
            if o in body_passed and ours.outcomes.get(t) not in body_passed
        )
        only_ours = sorted(
            t
            for t, o in ours.outcomes.items()
            if o in body_passed and moto.outcomes.get(t) not in body_passed
        )
        summary["passed_only_by_moto"] = only_moto
        summary["passed_only_by_sagequeue"] = only_ours
        print(f"\nassertions hold on moto only ({len(only_moto)}): {', '.join(only_moto) or '-'}")
        print(
            f"assertions hold on sagequeue only ({len(only_ours)}): {', '.join(only_ours) or '-'}"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="path to an s3-tests checkout")
    parser.add_argument("-k", dest="keyword", default="", help="pytest -k expression")
    parser.add_argument(
        "--server", action="append", choices=["sagequeue", "moto"], help="default: both"
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    suite = args.checkout / "s3tests_boto3" / "functional" / "test_s3.py"
    if not suite.exists():
        parser.error(f"{suite} does not exist")
    servers = args.server or ["sagequeue", "moto"]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="s3conformance-") as temp:
        work = Path(temp)
        for server in servers:
            start = sagequeue_server if server == "sagequeue" else moto_server
            began = time.monotonic()
            with start(work) as (port, access, secret):
                results[server] = run_suite(
                    server, args.checkout.resolve(), work, port, access, secret, args.keyword
                )
            print(f"{server}: suite ran in {time.monotonic() - began:.0f} s", file=sys.stderr)
        summary = report(results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
