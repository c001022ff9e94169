"""`make local`: start the platform, print what runs where and how to call it, stop on Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading

from sluice_local.config import PARAMETER_OVERRIDES, LocalConfig, ParameterOverridesError
from sluice_local.stack import ENDPOINT, VARIANTS, LocalStack, Started


def _skipped_lines(skipped: list) -> list[str]:
    """One line per resource type: the names (a few) and why (each item's .reason).

    Also used for what local mode created through the APIs (deploy.Created has the same fields).
    """
    by_type: dict[str, list] = {}
    for item in skipped:
        by_type.setdefault(item.type, []).append(item)
    lines = []
    for kind, items in sorted(by_type.items()):
        names = ", ".join(item.logical_id for item in items[:3]) + (
            f" +{len(items) - 3} more" if len(items) > 3 else ""
        )
        lines.append(f"    - {kind} x{len(items)} ({names}): {items[0].reason}")
    return lines


def _schedule_lines(started: Started) -> list[str]:
    """The schedules local mode fires (moto stores them but never does), and those it cannot, with why."""
    lines = [f"    - {schedule.describe()}" for schedule in started.schedules]
    lines += [f"    - NOT RUN {item.logical_id} ({item.type}): {item.reason}" for item in started.schedules_not_run]
    return lines


def banner(started: Started) -> str:
    key = started.api_key
    api = started.api_url
    skipped = "\n".join(_skipped_lines(started.skipped))
    created = "\n".join(_skipped_lines(started.created))
    created_section = (
        f"\n\n  Created by local mode through the emulator's APIs (moto's CloudFormation does not):\n{created}"
        if created
        else ""
    )
    key_line = (
        f"  API key      {key}   (consumer, tenant local; generated now, set SLUICE_LOCAL_API_KEY to choose it)"
        if started.key_generated
        else f"  API key      {key}   (consumer, tenant local; from SLUICE_LOCAL_API_KEY)"
    )
    operator = started.operator_key
    key_line += (
        f"\n  Operator key {operator}   (operator, tenant platform; generated now, set SLUICE_LOCAL_OPERATOR_KEY"
        " to choose it)"
        if started.operator_key_generated
        else f"\n  Operator key {operator}   (operator, tenant platform; from SLUICE_LOCAL_OPERATOR_KEY)"
    )
    schedules = "\n".join(_schedule_lines(started)) or "    - none in the template"
    weights = ", ".join(f"{version} {int(weight * 100)}%" for version, weight in VARIANTS)
    return f"""
Sluice is running locally (nothing here calls AWS; all traffic stays on loopback).

  API          {api}/v1            (OpenAI base_url; routes and authorizer from template.yaml)
{key_line}
  Embedded AWS {started.aws_url}          (moto, Step Functions interpreter on)
               aws --endpoint-url {started.aws_url} s3 ls      buckets: {", ".join(started.buckets) or "-"}
  SageMaker    {started.sagemaker_url}  endpoint {ENDPOINT}: {weights} (real scikit-learn model processes)
               Models {ENDPOINT}-v1, {ENDPOINT}-v2, {ENDPOINT}-degraded (the one a deployment must roll back)
  Bedrock      {started.bedrock_url}  EMULATED: local stand-in, answers are not from a foundation model

  Not created by the emulator (served or skipped by local mode instead):
{skipped or "    - none"}{created_section}

  Schedules fired by local mode (rates are template parameters: {PARAMETER_OVERRIDES}):
{schedules}

Try it (in another terminal):

  curl -s {api}/v1/models/iris/invoke -H "Authorization: Bearer {key}" \\
       -H "Content-Type: application/json" -d '{{"instances": [[5.1, 3.5, 1.4, 0.2]]}}'

  curl -s {api}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
       -d '{{"model": "chat", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{api}/v1", api_key="{key}"); \\
  r = c.chat.completions.create(model="chat", messages=[{{"role": "user", "content": "Hi"}}]); \\
  print(r.choices[0].message.content)'

  curl -s {api}/v1/approvals -H "Authorization: Bearer {operator}"    # operators: pending approvals

  GET {api}/v1/models lists every model with a description and an example request.
Ctrl-C stops everything.
"""


def main() -> int:
    try:
        config = LocalConfig()
    except ParameterOverridesError as exc:
        print(f"sluice local: could not start: {exc}", file=sys.stderr)
        return 2
    stack = LocalStack(config)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        started = stack.start()
    except ParameterOverridesError as exc:
        stack.stop()
        print(f"sluice local: could not start: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        stack.stop()
        print(f"sluice local: could not start: {exc}", file=sys.stderr)
        raise
    print(banner(started), flush=True)
    # Scripts and tests wait for this exact line.
    print(f"SLUICE_LOCAL_READY {started.api_url}", flush=True)
    stopping.wait()
    print("stopping...", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
