"""Fit a translated (plain CloudFormation) template to what moto's CloudFormation can create.

Every rule is driven by resource types, never by the template's logical ids, so a resource added to
template.yaml is created locally, or skipped with a reason, with no change here:

- API Gateway resources are left out: the local API gateway serves the template's routes itself.
- Types moto's CloudFormation has no model for are left out (moto would skip them silently and
  hand `None` to whatever refers to them); the installed moto is asked, so upgrading moto brings
  types back in.
- A kept resource that only attaches something to a left-out one (a Lambda permission for an API,
  a topic subscription) goes too; any other reference to a left-out resource becomes a placeholder
  literal (recorded), and outputs that need one are dropped.
- State machines get their `DefinitionSubstitutions` applied, which moto ignores.
- What moto's CloudFormation cannot create but its service APIs can (topic subscriptions, and bucket
  notification configurations, which moto's CloudFormation ignores) is deferred: left out of (or
  ignored in) the stack and created through the APIs once the stack exists (deploy.py). Their
  intrinsic functions are resolved by moto itself, as hidden stack outputs carrying the resource's
  Condition: an output missing afterwards means the condition is false, or `AWS::NoValue`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import moto
from moto.cloudformation.parsing import NULL_MODELS, get_model_map

LOCAL_API_TYPES = ("AWS::ApiGateway::", "AWS::ApiGatewayV2::")
# Resources whose only purpose is to attach something to the resource they reference.
ATTACHMENT_TYPES = frozenset(
    {
        "AWS::Lambda::Permission",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::SNS::Subscription",
        "AWS::SNS::TopicPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::S3::BucketPolicy",
        "AWS::Logs::SubscriptionFilter",
    }
)
# Created through the service API after the stack exists (deploy.connect_event_sources).
API_CREATED_TYPES = frozenset({"AWS::SNS::Subscription"})
# Properties of types moto's CloudFormation creates but ignores, applied through the API afterwards.
API_APPLIED_PROPERTIES: dict[str, tuple[str, ...]] = {
    "AWS::S3::Bucket": ("NotificationConfiguration", "VersioningConfiguration")
}
# Stack outputs added to resolve deferred resources' intrinsic functions; not the template's outputs.
LOCAL_OUTPUT_PREFIX = "SluiceLocalResolved"
# Stands for an intrinsic function in Deferred.properties: {OUTPUT_MARKER: output key}.
OUTPUT_MARKER = "SluiceLocal::Output"
_SUB_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_.]+))?\}")
_DEFINITION_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class Skipped:
    logical_id: str
    type: str  # the resource type, or "Output"
    reason: str


@dataclass(frozen=True)
class Adjusted:
    logical_id: str
    detail: str


@dataclass(frozen=True)
class Deferred:
    """A resource (part None) or a property of one (part: its name) to create through the API."""

    logical_id: str
    type: str
    part: str | None
    # The properties to create, each intrinsic function replaced by {OUTPUT_MARKER: output key}.
    properties: dict[str, Any]
    # Output present only while the resource's Condition holds (None: the resource has none).
    condition_output: str | None = None
    condition: str | None = None


@dataclass
class Adapted:
    template: dict[str, Any]
    skipped: list[Skipped]
    adjusted: list[Adjusted]
    deferred: list[Deferred] = field(default_factory=list)
    local_outputs: list[str] = field(default_factory=list)  # the hidden outputs added for them


def drop_reason(resource_type: str) -> str | None:
    """Why a resource of this type cannot be in the local stack, or None if moto creates it."""
    if resource_type.startswith(LOCAL_API_TYPES):
        return "served by the local API gateway (sluice_local.gateway), not by moto"
    if resource_type.startswith("Custom::") or resource_type == "AWS::CloudFormation::CustomResource":
        return None
    if resource_type in NULL_MODELS or resource_type not in get_model_map():
        return f"moto {moto.__version__} CloudFormation cannot create {resource_type}"
    return None


def adapt(template: dict[str, Any]) -> Adapted:
    template = copy.deepcopy(template)
    resources: dict[str, Any] = template.get("Resources", {})
    skipped: list[Skipped] = []
    adjusted: list[Adjusted] = []
    dropped: dict[str, str] = {}  # logical id -> type
    to_defer: dict[str, dict] = {}  # logical id -> resource, left out of the stack

    for logical_id, resource in list(resources.items()):
        reason = drop_reason(resource["Type"])
        if reason:
            if resource["Type"] in API_CREATED_TYPES:
                to_defer[logical_id] = resource
            else:
                skipped.append(Skipped(logical_id, resource["Type"], reason))
            dropped[logical_id] = resource["Type"]
            del resources[logical_id]

    # Attachments of a dropped resource go too, which may leave further attachments dangling.
    changed = True
    while changed:
        changed = False
        for logical_id, resource in list(resources.items()):
            targets = references(resource.get("Properties", {})) & dropped.keys()
            if resource["Type"] in ATTACHMENT_TYPES and targets:
                reason = f"attaches to {', '.join(sorted(targets))}, which is not in the local stack"
                skipped.append(Skipped(logical_id, resource["Type"], reason))
                dropped[logical_id] = resource["Type"]
                del resources[logical_id]
                changed = True

    deferred: list[Deferred] = []
    outputs = _LocalOutputs(template)
    for logical_id, resource in to_defer.items():
        targets = references(resource.get("Properties", {})) & dropped.keys()
        if targets:
            reason = f"refers to {', '.join(sorted(targets))}, which is not in the local stack"
            skipped.append(Skipped(logical_id, resource["Type"], reason))
        else:
            deferred.append(outputs.defer(logical_id, resource, None, resource.get("Properties", {})))
    for logical_id, resource in resources.items():
        for name in API_APPLIED_PROPERTIES.get(resource["Type"], ()):
            value = resource.get("Properties", {}).get(name)
            if value is None:
                continue
            targets = references(value) & dropped.keys()
            if targets:
                reason = f"{name} refers to {', '.join(sorted(targets))}, which is not in the local stack"
                skipped.append(Skipped(logical_id, f"{resource['Type']} {name}", reason))
            else:
                deferred.append(outputs.defer(logical_id, resource, name, {name: value}))

    for logical_id, resource in resources.items():
        _drop_depends_on(logical_id, resource, dropped, adjusted)
        targets = references(resource) & dropped.keys()
        if targets:
            resource["Properties"] = _replace_references(resource.get("Properties", {}), dropped)
            adjusted.append(
                Adjusted(logical_id, f"references to {', '.join(sorted(targets))} replaced by placeholder literals")
            )
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            _apply_definition_substitutions(logical_id, resource, adjusted)

    for name, output in list(template.get("Outputs", {}).items()):
        targets = references(output) & dropped.keys()
        if targets:
            del template["Outputs"][name]
            skipped.append(Skipped(name, "Output", f"refers to {', '.join(sorted(targets))}"))
    return Adapted(template, skipped, adjusted, deferred, outputs.add_to_template())


class _LocalOutputs:
    """Hidden outputs through which moto resolves deferred resources' intrinsic functions."""

    def __init__(self, template: dict[str, Any]) -> None:
        self._template = template
        self._outputs: dict[str, Any] = {}
        self._taken = set(template.get("Outputs", {}))

    def defer(self, logical_id: str, resource: dict, part: str | None, properties: dict[str, Any]) -> Deferred:
        condition = resource.get("Condition")
        condition_output = self._add("true", condition) if condition else None
        resolved = self._replace(copy.deepcopy(properties), condition)
        return Deferred(logical_id, resource["Type"], part, resolved, condition_output, condition)

    def add_to_template(self) -> list[str]:
        if self._outputs:
            self._template.setdefault("Outputs", {}).update(self._outputs)
        return list(self._outputs)

    def _add(self, value: Any, condition: str | None) -> str:
        index = len(self._outputs)
        while f"{LOCAL_OUTPUT_PREFIX}{index}" in self._taken:
            index += 1
        key = f"{LOCAL_OUTPUT_PREFIX}{index}"
        self._taken.add(key)
        self._outputs[key] = {"Value": value, **({"Condition": condition} if condition else {})}
        return key

    def _replace(self, node: Any, condition: str | None) -> Any:
        if isinstance(node, list):
            return [self._replace(item, condition) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1 and any(key == "Ref" or key.startswith("Fn::") for key in node):
            return {OUTPUT_MARKER: self._add(node, condition)}
        return {key: self._replace(value, condition) for key, value in node.items()}


def references(node: Any) -> set[str]:
    """Logical ids (and parameters) a template fragment refers to by Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else str(value).split(".", 1)[0])
            elif key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else (value[0], value[1])
                found.update(name for name, _ in _SUB_VARIABLE.findall(text) if name not in variables)
            found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return found


def _drop_depends_on(logical_id: str, resource: dict, dropped: dict[str, str], adjusted: list[Adjusted]) -> None:
    depends = resource.get("DependsOn")
    if depends is None:
        return
    names = [depends] if isinstance(depends, str) else list(depends)
    kept = [name for name in names if name not in dropped]
    if kept != names:
        resource["DependsOn"] = kept
        removed = sorted(set(names) - set(kept))
        adjusted.append(Adjusted(logical_id, f"DependsOn {', '.join(removed)} removed"))


def _placeholder(logical_id: str, resource_type: str, attribute: str | None) -> str:
    """A harmless stand-in; ARN-shaped where an ARN is expected (IAM policies validate them)."""
    if attribute and attribute.endswith("Arn"):
        service = resource_type.split("::")[1].lower()
        return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:local-skipped/{logical_id}"
    return f"local-skipped-{logical_id}" + (f"-{attribute}" if attribute else "")


def _replace_references(node: Any, dropped: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_replace_references(item, dropped) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"} and node["Ref"] in dropped:
        return _placeholder(node["Ref"], dropped[node["Ref"]], None)
    if set(node) == {"Fn::GetAtt"}:
        target = node["Fn::GetAtt"]
        name, attribute = target if isinstance(target, list) else str(target).split(".", 1)
        if name in dropped:
            return {"Fn::Sub": _placeholder(name, dropped[name], attribute)}
    if set(node) == {"Fn::Sub"}:
        value = node["Fn::Sub"]
        text, variables = (value, {}) if isinstance(value, str) else (value[0], value[1])

        def substitute(match: re.Match) -> str:
            name, attribute = match.group(1), match.group(2)
            if name in dropped and name not in variables:
                return _placeholder(name, dropped[name], attribute)
            return match.group(0)

        text = _SUB_VARIABLE.sub(substitute, text)
        return {"Fn::Sub": text if isinstance(value, str) else [text, _replace_references(variables, dropped)]}
    return {key: _replace_references(value, dropped) for key, value in node.items()}


def _apply_definition_substitutions(logical_id: str, resource: dict, adjusted: list[Adjusted]) -> None:
    """moto keeps `${Name}` in the definition: resolve it by joining the text around each placeholder
    with the substitution's value (Fn::Join of text and intrinsics).

    SAM emits the definition as Fn::Join of lines; a line that is itself an intrinsic is joined the
    same way. Not Fn::Sub: moto's Fn::Sub turns `$$` (the ASL context object, `$$.Execution.Id`) into `$`.
    """
    properties = resource.get("Properties", {})
    substitutions = properties.pop("DefinitionSubstitutions", None)
    if not substitutions:
        return
    definition = properties.get("DefinitionString")
    variables = dict(substitutions)
    if isinstance(definition, dict) and "Fn::Join" in definition:
        separator, parts = definition["Fn::Join"]
        texts = []
        for index, part in enumerate(parts):
            if isinstance(part, str):
                texts.append(part)
            else:
                variables[f"LocalDefinitionPart{index}"] = part
                texts.append(f"${{LocalDefinitionPart{index}}}")
        definition = separator.join(texts)
    if not isinstance(definition, str):
        return
    pieces: list[Any] = []
    position = 0
    for match in _DEFINITION_VARIABLE.finditer(definition):
        if match.group(1) in variables:
            pieces += [definition[position : match.start()], variables[match.group(1)]]
            position = match.end()
    pieces.append(definition[position:])
    properties["DefinitionString"] = {"Fn::Join": ["", [piece for piece in pieces if piece != ""]]}
    adjusted.append(Adjusted(logical_id, f"DefinitionSubstitutions {', '.join(sorted(substitutions))} applied"))
