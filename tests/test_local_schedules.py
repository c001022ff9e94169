"""Local mode fires the template's schedules itself, and takes SLUICE_LOCAL_PARAMETER_OVERRIDES.

moto stores EventBridge rules (and its CloudFormation skips Scheduler schedules) but never fires
them. Local mode reads each schedule from the translated template, resolves it against the deployed
stack, and invokes the target function on time. The scenario tests step a fake clock through the
minutes, so no test sleeps; the fixture template (tests/fixtures/local_schedules) has a schedule of
each shape (SAM ScheduleV2 and Schedule events, plain Scheduler schedules) and some local mode
cannot run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from sluice_local.__main__ import banner
from sluice_local.config import LocalConfig, ParameterOverridesError, parse_parameter_overrides
from sluice_local.deploy import deploy_template
from sluice_local.lambdas import LambdaRunner
from sluice_local.schedule_expressions import (
    At,
    ExpressionError,
    Rate,
    UnsupportedExpression,
    parse_expression,
)
from sluice_local.scheduler import LocalScheduler
from sluice_local.schedules import RULE, SCHEDULE, Schedule, StackValues, read_schedules, stack_values
from sluice_local.stack import LocalStack, Started, deploy_parameters
from tests.conftest import FIXTURES

REGION = "us-east-1"
TEMPLATE = FIXTURES / "local_schedules" / "template.yaml"
T0 = datetime(2026, 12, 4, 16, 50, 30, tzinfo=UTC)  # a Friday
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:stack-Reaper-ABC"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def next_times(expression: str, after: datetime, count: int, timezone: str | None = None) -> list[datetime]:
    parsed = parse_expression(expression, timezone)
    found, moment = [], after
    for _ in range(count):
        moment = parsed.next_after(moment, after)
        found.append(moment)
    return found


# ---------------------------------------------------------------------- expressions
@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 12 * 3600),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 7 * 86400),
    ],
)
def test_rates_fire_every_period_from_the_start(expression, seconds):
    assert parse_expression(expression) == Rate(seconds)
    assert next_times(expression, T0, 3) == [T0 + timedelta(seconds=seconds * k) for k in (1, 2, 3)]


def test_a_rate_keeps_its_grid_when_asked_late():
    rate = parse_expression("rate(5 minutes)")
    # Asked 12 minutes after the start: the next firing is the third slot, not now + 5 minutes.
    assert rate.next_after(T0 + timedelta(minutes=12), T0) == T0 + timedelta(minutes=15)
    assert rate.next_after(T0 + timedelta(minutes=15), T0) == T0 + timedelta(minutes=20)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # Every 15 minutes in office hours on weekdays: Friday 16:50 -> 17:00, 17:15, ... then Monday 09:00.
        (
            "cron(0/15 9-17 ? * MON-FRI *)",
            "2026-12-04T16:50:30",
            ["2026-12-04T17:00", "2026-12-04T17:15", "2026-12-04T17:30", "2026-12-04T17:45", "2026-12-07T09:00"],
        ),
        ("cron(*/20 * * * ? *)", "2026-12-04T16:50:30", ["2026-12-04T17:00", "2026-12-04T17:20", "2026-12-04T17:40"]),
        (
            "cron(10-50/20 3 * * ? *)",
            "2026-12-04T00:00:00",
            ["2026-12-04T03:10", "2026-12-04T03:30", "2026-12-04T03:50"],
        ),
        # Lists and month names; day-of-month with day-of-week '?'.
        (
            "cron(0 12 1,15 JAN,JUL ? *)",
            "2026-12-04T00:00:00",
            ["2027-01-01T12:00", "2027-01-15T12:00", "2027-07-01T12:00"],
        ),
        # Day-of-week numbers run 1 (SUN) to 7 (SAT), as AWS numbers them.
        ("cron(0 8 ? * 1 *)", "2026-12-04T00:00:00", ["2026-12-06T08:00", "2026-12-13T08:00"]),
        (
            "cron(0 8 ? * SAT,SUN *)",
            "2026-12-04T00:00:00",
            ["2026-12-05T08:00", "2026-12-06T08:00", "2026-12-12T08:00"],
        ),
        # A year field: nothing before 2028.
        ("cron(0 0 1 1 ? 2028-2029)", "2026-12-04T00:00:00", ["2028-01-01T00:00", "2029-01-01T00:00", None]),
        # A time exactly on a firing fires the next one (strictly after).
        ("cron(0 * * * ? *)", "2026-12-04T17:00:00", ["2026-12-04T18:00"]),
    ],
)
def test_cron_fires_at_the_minutes_it_names(expression, after, expected):
    found = []
    moment = utc(after)
    parsed = parse_expression(expression)
    for _ in expected:
        moment = parsed.next_after(moment, utc(after)) if moment else None
        found.append(moment)
    assert found == [utc(text) if text else None for text in expected]


def test_cron_reads_the_schedule_time_zone():
    # 02:30 in Paris is 01:30 UTC in winter and 00:30 UTC in summer.
    assert next_times("cron(30 2 * * ? *)", utc("2026-12-04T00:00:00"), 1, "Europe/Paris") == [
        utc("2026-12-04T01:30:00")
    ]
    assert next_times("cron(30 2 * * ? *)", utc("2026-07-01T00:00:00"), 1, "Europe/Paris") == [
        utc("2026-07-01T00:30:00")
    ]


def test_a_one_time_schedule_fires_once():
    at = parse_expression("at(2026-12-04T17:00:00)")
    assert at == At(utc("2026-12-04T17:00:00"))
    assert at.next_after(T0, T0) == utc("2026-12-04T17:00:00")
    assert at.next_after(utc("2026-12-04T17:00:00"), T0) is None


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 0 L * ? *)",  # last day of the month
        "cron(0 0 15W * ? *)",  # nearest weekday to the 15th
        "cron(0 0 ? * 6L *)",  # last Friday
        "cron(0 0 ? * 2#1 *)",  # first Monday
    ],
)
def test_cron_features_local_mode_cannot_schedule_say_so(expression):
    with pytest.raises(UnsupportedExpression, match="local mode does not schedule"):
        parse_expression(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(5 weeks)", "unit must be"),
        ("rate(0 minutes)", "at least 1"),
        ("cron(0 12 * * *)", "6 fields"),
        ("cron(0 12 * * MON *)", "must be '?'"),
        ("cron(61 * * * ? *)", "outside 0-59"),
        ("cron(0 0 ? FOO * *)", "not a number or a name"),
        ("cron(0 0 ? * MON-FRI/0 *)", "at least 1"),
        ("every 5 minutes", "not a rate"),
    ],
)
def test_expressions_aws_would_refuse_are_refused(expression, message):
    with pytest.raises(ExpressionError, match=message):
        parse_expression(expression)


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(ExpressionError, match="unknown time zone"):
        parse_expression("cron(0 0 * * ? *)", "Mars/Olympus")


# ---------------------------------------------------------------------- reading a translated template
VALUES = StackValues(
    parameters={"ReaperRateMinutes": "10", "ReaperEnabled": "true"},
    resources={"Reaper": "stack-Reaper-ABC", "ReaperRule": "stack-ReaperRule-XYZ"},
    function_arns={"Reaper": FUNCTION_ARN},
    region=REGION,
    account="123456789012",
    stack_name="stack",
)


def schedule_resource(**properties) -> dict:
    target = {"Arn": {"Fn::GetAtt": ["Reaper", "Arn"]}, "RoleArn": {"Fn::GetAtt": ["ReaperRole", "Arn"]}}
    target.update(properties.pop("Target", {}))
    return {
        "Type": SCHEDULE,
        "Properties": {"ScheduleExpression": "rate(5 minutes)", "FlexibleTimeWindow": {"Mode": "OFF"}, "Target": target}
        | properties,
    }


def test_a_scheduler_schedule_is_resolved_against_the_stack():
    template = {
        "Resources": {
            "ReaperSchedule": schedule_resource(
                ScheduleExpression={"Fn::Sub": "rate(${ReaperRateMinutes} minutes)"},
                Target={"Input": {"Fn::Sub": '{"stack": "${AWS::StackName}"}'}},
            )
        }
    }
    (schedule,), not_run = read_schedules(template, VALUES)
    assert not_run == []
    assert schedule.expression_text == "rate(10 minutes)"
    assert schedule.expression == Rate(600)
    assert (schedule.function, schedule.function_arn) == ("Reaper", FUNCTION_ARN)
    assert schedule.input == '{"stack": "stack"}'
    assert schedule.arn == "arn:aws:scheduler:us-east-1:123456789012:schedule/default/ReaperSchedule"


def test_a_rule_fires_each_function_target_and_reports_the_others():
    template = {
        "Resources": {
            "ReaperRule": {
                "Type": RULE,
                "Properties": {
                    "ScheduleExpression": "cron(0 * * * ? *)",
                    "Targets": [
                        {"Id": "Reaper", "Arn": {"Fn::GetAtt": ["Reaper", "Arn"]}},
                        {"Id": "Queue", "Arn": {"Fn::GetAtt": ["Queue", "Arn"]}},
                        {"Id": "Shaped", "Arn": FUNCTION_ARN, "InputTransformer": {"InputTemplate": "{}"}},
                    ],
                },
            },
            # An event-pattern rule is no schedule.
            "OnUpload": {"Type": RULE, "Properties": {"EventPattern": {"source": ["aws.s3"]}, "Targets": []}},
        }
    }
    schedules, not_run = read_schedules(template, VALUES)
    assert [(s.logical_id, s.function, s.input) for s in schedules] == [("ReaperRule/Reaper", "Reaper", None)]
    # The rule's ARN, with the name moto's CloudFormation gave it.
    assert schedules[0].arn == "arn:aws:events:us-east-1:123456789012:rule/stack-ReaperRule-XYZ"
    reasons = {item.logical_id: item.reason for item in not_run}
    assert reasons == {
        "ReaperRule/Queue": "target Queue.Arn is not one of the template's functions (local mode fires only those)",
        "ReaperRule/Shaped": "InputTransformer not applied locally",
    }


def test_disabled_false_conditions_and_bad_inputs():
    template = {
        "Conditions": {
            "ReaperOn": {"Fn::Equals": [{"Ref": "ReaperEnabled"}, "true"]},
            "ReaperOff": {"Fn::Not": [{"Condition": "ReaperOn"}]},
        },
        "Resources": {
            "Paused": schedule_resource(State="DISABLED"),
            "OnlyWhenOff": {**schedule_resource(), "Condition": "ReaperOff"},
            "OnlyWhenOn": {
                **schedule_resource(
                    ScheduleExpression={"Fn::If": ["ReaperOn", "rate(1 hour)", {"Ref": "NoSuchParameter"}]}
                ),
                "Condition": "ReaperOn",
            },
            "NotJson": schedule_resource(Target={"Input": "not json"}),
            "MissingParameter": schedule_resource(ScheduleExpression={"Ref": "Undeclared"}),
        },
    }
    schedules, not_run = read_schedules(template, VALUES)
    assert [(s.logical_id, s.expression_text) for s in schedules] == [("OnlyWhenOn", "rate(1 hour)")]
    reasons = {item.logical_id: item.reason for item in not_run}
    assert reasons == {
        "Paused": "State is DISABLED",
        "NotJson": "Input 'not json' is not JSON (a Lambda payload must be)",
        "MissingParameter": "Ref Undeclared: no such parameter or resource in the local stack",
    }  # OnlyWhenOff is not created on AWS either: not reported


# ---------------------------------------------------------------------- firing on time
class FakeClock:
    """Time that moves only when the scheduler waits; ends the loop after `until`."""

    def __init__(self, start: datetime, until: datetime) -> None:
        self.now = start
        self.until = until
        self.waits: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)
        return self.now > self.until


class RecordingRunner:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def invoke_result(self, name, event):
        with self._lock:
            self.calls.append((name, event))
        if self.fail:
            return SimpleNamespace(function_error="Unhandled", payload={"errorType": "Boom", "errorMessage": "no"})
        return SimpleNamespace(function_error=None, payload={})


def make_schedule(expression: str, *, input_text: str | None = None, kind: str = SCHEDULE, **extra) -> Schedule:
    arn = (
        "arn:aws:scheduler:us-east-1:123456789012:schedule/default/Reap"
        if kind == SCHEDULE
        else "arn:aws:events:us-east-1:123456789012:rule/stack-ReapRule-1"
    )
    return Schedule(
        logical_id="Reap",
        type=kind,
        expression_text=expression,
        expression=parse_expression(expression),
        function="Reaper",
        function_arn=FUNCTION_ARN,
        arn=arn,
        input=input_text,
        **extra,
    )


def run(schedules: list[Schedule], clock: FakeClock, runner=None) -> RecordingRunner:
    runner = runner or RecordingRunner()
    scheduler = LocalScheduler(schedules, runner, clock=clock, wait=clock.wait)
    scheduler.start()
    scheduler.join(timeout=2)
    return runner


def event_times(runner: RecordingRunner) -> list[str]:
    return sorted(event["time"] for _, event in runner.calls)


def test_a_rate_schedule_fires_every_period_with_the_scheduled_event():
    clock = FakeClock(T0, until=T0 + timedelta(minutes=3, seconds=30))
    runner = run([make_schedule("rate(1 minute)", kind=RULE)], clock)
    assert event_times(runner) == ["2026-12-04T16:51:30Z", "2026-12-04T16:52:30Z", "2026-12-04T16:53:30Z"]
    # It slept until each firing, never polled.
    assert clock.waits[:3] == [60.0, 60.0, 60.0]
    name, event = runner.calls[0]
    assert name == FUNCTION_ARN
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/stack-ReapRule-1"]
    assert (event["account"], event["region"], event["detail"], event["version"]) == (
        "123456789012",
        REGION,
        {},
        "0",
    )
    assert len({event["id"] for _, event in runner.calls}) == 3


def test_schedules_fire_side_by_side_on_their_own_times():
    clock = FakeClock(T0, until=utc("2026-12-04T17:31:00"))
    at = "<aws.scheduler.scheduled-time>"
    reaper = make_schedule("rate(20 minutes)", input_text=json.dumps({"task": "reap", "at": at}))
    sweep = make_schedule("cron(0/30 * * * ? *)", input_text=json.dumps({"task": "sweep", "at": at}))
    runner = run([reaper, sweep], clock)
    assert sorted((event["at"], event["task"]) for _, event in runner.calls) == [
        ("2026-12-04T17:00:00Z", "sweep"),
        ("2026-12-04T17:10:30Z", "reap"),
        ("2026-12-04T17:30:00Z", "sweep"),
        ("2026-12-04T17:30:30Z", "reap"),
    ]
    # It woke at each firing and only then.
    assert clock.waits == [570.0, 630.0, 1170.0, 30.0, 1200.0]


def test_the_input_is_sent_with_scheduler_context_attributes():
    clock = FakeClock(T0, until=T0 + timedelta(minutes=5, seconds=1))
    schedule = make_schedule(
        "rate(5 minutes)",
        input_text='{"task": "reap", "at": "<aws.scheduler.scheduled-time>", "arn": "<aws.scheduler.schedule-arn>"}',
    )
    runner = run([schedule], clock)
    assert [event for _, event in runner.calls] == [
        {
            "task": "reap",
            "at": "2026-12-04T16:55:30Z",
            "arn": "arn:aws:scheduler:us-east-1:123456789012:schedule/default/Reap",
        }
    ]


def test_start_and_end_dates_bound_the_firings():
    clock = FakeClock(T0, until=T0 + timedelta(hours=1))
    schedule = make_schedule(
        "rate(10 minutes)",
        start=utc("2026-12-04T17:00:00"),
        end=utc("2026-12-04T17:25:00"),
    )
    runner = run([schedule], clock)
    assert event_times(runner) == ["2026-12-04T17:10:00Z", "2026-12-04T17:20:00Z"]


def test_a_failing_target_is_logged_and_the_schedule_keeps_firing(caplog):
    clock = FakeClock(T0, until=T0 + timedelta(minutes=2, seconds=1))
    runner = run([make_schedule("rate(1 minute)")], clock, RecordingRunner(fail=True))
    assert len(runner.calls) == 2
    assert "schedule Reap: Reaper failed: Boom: no" in caplog.text


def test_stop_ends_a_waiting_scheduler_at_once():
    runner = RecordingRunner()
    scheduler = LocalScheduler([make_schedule("rate(1 minute)")], runner)  # the real clock and wait
    scheduler.start()
    began = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - began < 1
    assert runner.calls == []
    assert not scheduler._thread.is_alive()


# ---------------------------------------------------------------------- SLUICE_LOCAL_PARAMETER_OVERRIDES
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("TickRateMinutes=2", {"TickRateMinutes": "2"}),
        ("A=1  B=two", {"A": "1", "B": "two"}),
        ("Label=\"a b\" Other='c d'", {"Label": "a b", "Other": "c d"}),
        ("Query=a=b==c", {"Query": "a=b==c"}),
        ("Empty=", {"Empty": ""}),
        ("ParameterKey=A,ParameterValue=x,y B=2", {"A": "x,y", "B": "2"}),
        ("A=1 A=2", {"A": "2"}),
    ],
)
def test_overrides_are_read_as_sam_deploy_reads_them(text, expected):
    assert parse_parameter_overrides(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JustAWord", "'JustAWord' is not Key=Value"),
        ("Bad-Name=1", "'Bad-Name' is not a parameter name"),
        ('Label="unterminated', "cannot split"),
    ],
)
def test_malformed_overrides_are_refused(text, message):
    with pytest.raises(ParameterOverridesError, match=message):
        parse_parameter_overrides(text)


def test_the_environment_variable_reaches_the_config(monkeypatch):
    monkeypatch.setenv("SLUICE_LOCAL_PARAMETER_OVERRIDES", 'TickRateMinutes=1 ReportLabel="night run"')
    assert LocalConfig().parameter_overrides == {"TickRateMinutes": "1", "ReportLabel": "night run"}


def test_an_unknown_key_fails_the_start_naming_it_and_the_parameters():
    config = LocalConfig(template=TEMPLATE, parameter_overrides={"TickRate": "1", "ReportLabel": "x"})
    stack = LocalStack(config)
    with pytest.raises(ParameterOverridesError) as raised:
        stack.start()  # before anything is started
    assert str(raised.value) == (
        "SLUICE_LOCAL_PARAMETER_OVERRIDES: template.yaml declares no parameter TickRate; "
        "its parameters: NightlyEnabled, ReportLabel, TickRateMinutes, TransformPollSeconds"
    )
    assert stack._stoppers == []


def test_overrides_win_over_local_defaults_and_only_declared_defaults_are_passed():
    config = LocalConfig(template=TEMPLATE, parameter_overrides={"ReportLabel": "x"})
    # TransformRetryWaitSeconds is local mode's too, but this template does not declare it.
    assert deploy_parameters(config) == {"TransformPollSeconds": "2", "ReportLabel": "x"}
    config = LocalConfig(template=TEMPLATE, parameter_overrides={"TransformPollSeconds": "7"})
    assert deploy_parameters(config) == {"TransformPollSeconds": "7"}


# ---------------------------------------------------------------------- the fixture stack in the embedded AWS


@pytest.fixture(scope="module")
def stack(moto):
    """Deployed as `make local` does, with overrides for a schedule rate and a function's setting."""
    config = LocalConfig(
        template=TEMPLATE,
        parameter_overrides=parse_parameter_overrides('TickRateMinutes=2 ReportLabel="night run=1"'),
    )
    parameters = deploy_parameters(config)
    deployment = deploy_template(
        TEMPLATE, aws_url=moto.url, stack_name="sluice-schedules", region=REGION, parameters=parameters
    )
    schedules, not_run = read_schedules(deployment.translated, stack_values(deployment, parameters))
    return deployment, schedules, not_run


def recorded(runner: LambdaRunner, name: str) -> list[dict]:
    return sys.modules[runner.handler(name).__module__].EVENTS


def test_an_override_reaches_the_functions_environment(stack):
    deployment, _, _ = stack
    environment = deployment.functions["TickFunction"].environment
    assert environment["REPORT_LABEL"] == "night run=1"
    assert environment["TRANSFORM_POLL_SECONDS"] == "2"  # local mode's own value, not the template's 60


def test_the_templates_schedules_are_read_as_deployed(stack):
    deployment, schedules, not_run = stack
    by_id = {schedule.logical_id: schedule for schedule in schedules}
    # SAM's ScheduleV2 event, its rate from the overridden parameter; SAM's Schedule event, a rule moto created.
    assert {name: (s.type, s.expression_text, s.function) for name, s in by_id.items()} == {
        "TickFunctionTick": (SCHEDULE, "rate(2 minutes)", "TickFunction"),
        "SweepFunctionHourly": (RULE, "cron(0 * * * ? *)", "SweepFunction"),
    }
    assert by_id["SweepFunctionHourly"].arn.endswith(f":rule/{deployment.resources['SweepFunctionHourly']}")
    assert by_id["TickFunctionTick"].function_arn == deployment.functions["TickFunction"].arn
    reasons = {item.logical_id: item.reason for item in not_run}
    assert reasons["TickFunctionPaused"] == "State is DISABLED"
    assert "uses L or W" in reasons["MonthEndSchedule"]
    assert "Queue.Arn is not one of the template's functions" in reasons["QueueSchedule"]
    assert "NightlySchedule" not in reasons  # its condition is false


def test_the_real_handlers_run_on_time(stack):
    deployment, schedules, _ = stack
    runner = LambdaRunner(deployment.functions, deployment.root)
    for name in ("TickFunction", "SweepFunction"):
        recorded(runner, name).clear()
    start = utc("2026-12-04T16:55:00")
    clock = FakeClock(start, until=utc("2026-12-04T17:05:00"))
    scheduler = LocalScheduler(schedules, runner, clock=clock, wait=clock.wait)
    scheduler.start()
    scheduler.join(timeout=2)
    # Each firing runs in its own thread (Lambda's asynchronous invoke): compare in scheduled order.
    assert sorted(recorded(runner, "TickFunction"), key=lambda event: event["scheduled"]) == [
        {"task": "tick", "scheduled": f"2026-12-04T{at}Z"}
        for at in ("16:57:00", "16:59:00", "17:01:00", "17:03:00", "17:05:00")
    ]
    (sweep,) = recorded(runner, "SweepFunction")
    assert (sweep["detail-type"], sweep["time"]) == ("Scheduled Event", "2026-12-04T17:00:00Z")
    assert sweep["resources"] == [
        f"arn:aws:events:{REGION}:123456789012:rule/{deployment.resources['SweepFunctionHourly']}"
    ]


def test_the_start_up_summary_lists_the_schedules(stack):
    deployment, schedules, not_run = stack
    started = Started(
        api_url="http://127.0.0.1:1",
        aws_url="http://127.0.0.1:2",
        sagemaker_url="http://127.0.0.1:3",
        bedrock_url="http://127.0.0.1:4",
        api_key="k",
        key_generated=False,
        buckets=[],
        resources=deployment.resources,
        skipped=deployment.skipped,
        schedules=schedules,
        schedules_not_run=not_run,
    )
    text = banner(started)
    assert "Schedules fired by local mode (rates are template parameters: SLUICE_LOCAL_PARAMETER_OVERRIDES)" in text
    assert "    - TickFunctionTick (AWS::Scheduler::Schedule): rate(2 minutes) -> TickFunction" in text
    assert "    - SweepFunctionHourly (AWS::Events::Rule): cron(0 * * * ? *) -> SweepFunction" in text
    assert "    - NOT RUN TickFunctionPaused (AWS::Scheduler::Schedule): State is DISABLED" in text


def test_a_summary_without_schedules_says_so():
    started = Started(
        api_url="u",
        aws_url="a",
        sagemaker_url="s",
        bedrock_url="b",
        api_key="k",
        key_generated=False,
        buckets=[],
        resources={},
        skipped=[],
    )
    assert "Schedules fired by local mode" in banner(started)
    assert "    - none in the template" in banner(started)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"NightlyEnabled": "yes"}, "NightlyEnabled='yes' is not one of its allowed values: true, false"),
        ({"TickRateMinutes": "five"}, "TickRateMinutes='five' is not a number"),
    ],
)
def test_a_value_cloudformation_would_refuse_fails_the_start(overrides, message):
    with pytest.raises(ParameterOverridesError, match=message):
        deploy_parameters(LocalConfig(template=TEMPLATE, parameter_overrides=overrides))
