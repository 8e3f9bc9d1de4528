"""``--cli-auto-prompt``: ask for the operation's parameters on a terminal.

A line-oriented take on AWS CLI v2's auto-prompt: each parameter not given on the command line
is asked for in model order (required ones until answered); an empty answer skips it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sagequeue.cli.aws import CliParameter


def prompt_for_parameters(args: argparse.Namespace, parameters: list[CliParameter]) -> None:
    for parameter in parameters:
        if getattr(args, parameter.member) is not None:
            continue
        label = f"{parameter.option} ({parameter.type_name}"
        label += ", required): " if parameter.required else "): "
        while True:
            sys.stderr.write(label)
            sys.stderr.flush()
            answer = sys.stdin.readline()
            if not answer:  # end of input: stop prompting
                return
            answer = answer.rstrip("\n")
            if answer or not parameter.required:
                break
        if answer:
            setattr(args, parameter.member, answer)
