"""The template's schedules, read from the translated template, for local mode to fire itself.

moto stores EventBridge rules but never fires them, and its CloudFormation skips
`AWS::Scheduler::Schedule` altogether, so the schedules come from the template as deployed
(Deployment.translated, SAM's `Schedule`/`ScheduleV2` events included, which SAM turns into
`AWS::Events::Rule` and `AWS::Scheduler::Schedule`) rather than from moto. Their intrinsic functions
are resolved here against what the stack holds: the parameter values it was created with (schedule
rates are parameters, so SLUICE_LOCAL_PARAMETER_OVERRIDES changes them), its resources' physical
ids and its functions' ARNs.

A schedule local mode cannot run (a target that is not one of the template's functions, a cron
with L/W/#, an input transformer) is returned as NotRun with the reason, for the start-up summary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sluice_local.schedule_expressions import Expression, ExpressionError, parse_expression

__all__ = ["NotRun", "Schedule", "StackValues", "read_schedules", "stack_values"]

SCHEDULE = "AWS::Scheduler::Schedule"
RULE = "AWS::Events::Rule"
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Schedule:
    logical_id: str  # the schedule or rule (`rule/target id` for one of a rule's several targets)
    type: str
    expression_text: str
    expression: Expression
    function: str  # the target function's logical id
    function_arn: str
    arn: str  # the rule's or schedule's ARN (the scheduled event's `resources`)
    input: str | None  # the target's Input as written (JSON text); None: the scheduled event
    start: datetime | None = None  # Scheduler's StartDate / EndDate (UTC)
    end: datetime | None = None

    def describe(self) -> str:
        return f"{self.logical_id} ({self.type}): {self.expression_text} -> {self.function}"


@dataclass(frozen=True)
class NotRun:
    logical_id: str
    type: str
    reason: str


@dataclass(frozen=True)
class StackValues:
    """What a template's intrinsic functions resolve to in the deployed stack."""

    parameters: dict[str, Any]  # name -> value (a list for list types)
    resources: dict[str, str]  # logical id -> physical id
    function_arns: dict[str, str]  # function logical id -> ARN
    region: str
    account: str
    stack_name: str


class _Unresolvable(ValueError):
    pass


def stack_values(deployment: Any, passed: dict[str, str]) -> StackValues:
    """The values of `deployment`'s stack: template defaults overridden by the `passed` parameters."""
    declared = deployment.translated.get("Parameters", {})
    parameters: dict[str, Any] = {}
    for name, declaration in declared.items():
        if name in passed or "Default" in declaration:
            value = str(passed.get(name, declaration.get("Default")))
            kind = str(declaration.get("Type", ""))
            list_type = kind == "CommaDelimitedList" or kind.startswith("List<")
            parameters[name] = [item.strip() for item in value.split(",")] if list_type else value
    arns = {logical_id: spec.arn for logical_id, spec in deployment.functions.items()}
    # arn:aws:lambda:region:account:function:name
    account = next((arn.split(":")[4] for arn in arns.values()), "123456789012")
    return StackValues(
        parameters=parameters,
        resources=dict(deployment.resources),
        function_arns=arns,
        region=deployment.region,
        account=account,
        stack_name=deployment.stack_name,
    )


def read_schedules(template: dict[str, Any], values: StackValues) -> tuple[list[Schedule], list[NotRun]]:
    """Every schedule of the (translated) template: those local mode runs, and those it does not, with why."""
    resolver = _Resolver(template, values)
    schedules: list[Schedule] = []
    not_run: list[NotRun] = []
    for logical_id, resource in template.get("Resources", {}).items():
        kind = resource.get("Type")
        properties = resource.get("Properties", {})
        if kind not in (SCHEDULE, RULE) or (kind == RULE and "ScheduleExpression" not in properties):
            continue  # an event-pattern rule is not a schedule
        try:
            if not resolver.condition_holds(resource.get("Condition")):
                continue  # not created on AWS either
            if kind == SCHEDULE:
                found = [_scheduler_schedule(logical_id, properties, resolver)]
            else:
                found = _rule_targets(logical_id, properties, resolver)
        except (_Unresolvable, ExpressionError) as error:
            not_run.append(NotRun(logical_id, kind, str(error)))
            continue
        for item in found:
            (schedules if isinstance(item, Schedule) else not_run).append(item)
    return schedules, not_run


def _scheduler_schedule(logical_id: str, properties: dict[str, Any], resolver: _Resolver) -> Schedule | NotRun:
    # Only what firing needs is resolved: RoleArn, DeadLetterConfig and the like may name what local mode
    # does not resolve, and are not used here.
    value = resolver.resolve_property
    if str(value(properties, "State", "ENABLED")).upper() == "DISABLED":
        return NotRun(logical_id, SCHEDULE, "State is DISABLED")
    expression_text = str(value(properties, "ScheduleExpression"))
    expression = parse_expression(expression_text, value(properties, "ScheduleExpressionTimezone"))
    target = properties.get("Target", {})
    function, not_function = resolver.target_function(target.get("Arn"))
    text = value(target, "Input")
    problem = not_function or _input_problem(text)
    if problem or function is None:
        return NotRun(logical_id, SCHEDULE, problem)
    values = resolver.values
    name = value(properties, "Name") or logical_id
    group = value(properties, "GroupName") or "default"
    return Schedule(
        logical_id=logical_id,
        type=SCHEDULE,
        expression_text=expression_text,
        expression=expression,
        function=function,
        function_arn=values.function_arns[function],
        arn=f"arn:aws:scheduler:{values.region}:{values.account}:schedule/{group}/{name}",
        input=text,
        start=_moment(value(properties, "StartDate")),
        end=_moment(value(properties, "EndDate")),
    )


def _rule_targets(logical_id: str, properties: dict[str, Any], resolver: _Resolver) -> list[Schedule | NotRun]:
    value = resolver.resolve_property
    if str(value(properties, "State", "ENABLED")).upper() == "DISABLED":
        return [NotRun(logical_id, RULE, "State is DISABLED")]
    expression_text = str(value(properties, "ScheduleExpression"))
    expression = parse_expression(expression_text)  # rules are always UTC
    values = resolver.values
    # moto's CloudFormation creates rules: the physical id is the rule's name.
    name = value(properties, "Name") or values.resources.get(logical_id) or logical_id
    arn = f"arn:aws:events:{values.region}:{values.account}:rule/{name}"
    found: list[Schedule | NotRun] = []
    targets = properties.get("Targets", [])
    for target in targets:
        # A rule's one target (SAM's Schedule event) goes by the rule's name; several by rule/target id.
        label = logical_id if len(targets) == 1 else f"{logical_id}/{value(target, 'Id', '?')}"
        function, not_function = resolver.target_function(target.get("Arn"))
        unsupported = [key for key in ("InputPath", "InputTransformer") if key in target]
        text = value(target, "Input")
        if unsupported:
            problem = f"{' and '.join(unsupported)} not applied locally"
        else:
            problem = not_function or _input_problem(text)
        if problem or function is None:
            found.append(NotRun(label, RULE, problem))
            continue
        found.append(
            Schedule(
                logical_id=label,
                type=RULE,
                expression_text=expression_text,
                expression=expression,
                function=function,
                function_arn=values.function_arns[function],
                arn=arn,
                input=text,
            )
        )
    return found


def _input_problem(text: Any) -> str | None:
    if text is None:
        return None
    try:
        # Scheduler's context attributes (<aws.scheduler.scheduled-time>) sit inside JSON strings.
        json.loads(str(text))
    except ValueError:
        return f"Input {text!r} is not JSON (a Lambda payload must be)"
    return None


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _describe(node: Any) -> str:
    """A target as the template wrote it (Queue.Arn), for messages."""
    if isinstance(node, dict) and set(node) == {"Fn::GetAtt"}:
        target = node["Fn::GetAtt"]
        return ".".join(target) if isinstance(target, list) else str(target)
    return json.dumps(node) if isinstance(node, dict | list) else str(node)


class _Resolver:
    """CloudFormation's intrinsic functions, as far as a schedule's properties use them."""

    def __init__(self, template: dict[str, Any], values: StackValues) -> None:
        self.values = values
        self._conditions = template.get("Conditions", {})
        self._mappings = template.get("Mappings", {})

    def resolve_property(self, properties: dict[str, Any], name: str, default: Any = None) -> Any:
        return self.resolve(properties[name]) if name in properties else default

    def target_function(self, node: Any) -> tuple[str | None, str | None]:
        """(the logical id of the function a target's Arn names, None) or (None, why local mode does not fire it)."""
        try:
            arn = str(self.resolve(node))
        except _Unresolvable:
            arn = _describe(node)
        for logical_id, function_arn in self.values.function_arns.items():
            # A version or alias qualifier runs the same code locally.
            if arn == function_arn or arn.startswith(function_arn + ":"):
                return logical_id, None
        return None, f"target {arn} is not one of the template's functions (local mode fires only those)"

    def condition_holds(self, name: str | None) -> bool:
        if name is None:
            return True
        if name not in self._conditions:
            raise _Unresolvable(f"condition {name} is not declared")
        return bool(self.resolve(self._conditions[name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in (self.resolve(item) for item in node) if item is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Condition":
                return self.condition_holds(argument)
            if key.startswith("Fn::"):
                return self._function(key, argument)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not None}  # AWS::NoValue

    def _ref(self, name: str) -> Any:
        values = self.values
        pseudo = {
            "AWS::Region": values.region,
            "AWS::AccountId": values.account,
            "AWS::StackName": values.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in values.parameters:
            return values.parameters[name]
        if name in values.resources:
            return values.resources[name]
        raise _Unresolvable(f"Ref {name}: no such parameter or resource in the local stack")

    def _get_att(self, name: str, attribute: str) -> Any:
        if attribute == "Arn" and name in self.values.function_arns:
            return self.values.function_arns[name]
        raise _Unresolvable(f"GetAtt {name}.{attribute}: local mode resolves only functions' Arn here")

    def _function(self, key: str, argument: Any) -> Any:
        if key == "Fn::GetAtt":
            name, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
            return self._get_att(name, attribute)
        if key == "Fn::Sub":
            return self._sub(argument)
        if key == "Fn::If":  # only the branch taken: the other may name what the stack does not have
            name, when_true, when_false = argument
            return self.resolve(when_true if self.condition_holds(name) else when_false)
        argument = self.resolve(argument)
        if key == "Fn::Join":
            separator, items = argument
            return separator.join(str(item) for item in items)
        if key == "Fn::Select":
            index, items = argument
            return items[int(index)]
        if key == "Fn::Split":
            separator, text = argument
            return str(text).split(separator)
        if key == "Fn::Equals":
            return str(argument[0]) == str(argument[1])
        if key == "Fn::Not":
            return not argument[0]
        if key == "Fn::And":
            return all(argument)
        if key == "Fn::Or":
            return any(argument)
        if key == "Fn::FindInMap":
            mapping, first, second = argument
            try:
                return self._mappings[mapping][first][second]
            except KeyError:
                raise _Unresolvable(f"FindInMap {mapping}/{first}/{second}: no such entry") from None
        raise _Unresolvable(f"{key} is not resolved by local mode's schedule reader")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        variables = {name: self.resolve(value) for name, value in variables.items()}

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal}
            if name in variables:
                return str(variables[name])
            if "." in name:
                resource, attribute = name.split(".", 1)
                return str(self._get_att(resource, attribute))
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(substitute, text)
