"""Deploy template.yaml into the embedded AWS, as `sam package` + `sam deploy` would, offline.

The SAM template is translated here (samtranslator, no AWS call), local code folders are zipped
into an S3 bucket of the embedded AWS, what moto cannot create is left out (cfn_adapt, with the
reasons), and moto's CloudFormation creates the rest. What the stack holds is then read back from
moto (physical ids, outputs, each function's resolved environment) rather than re-derived.

What moto's CloudFormation cannot create but its APIs can (topic subscriptions; bucket notification
configurations, which it ignores) is then created through those APIs (connect_event_sources) and
listed in Deployment.created; once that runs, moto delivers SNS messages and S3 events to them.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.exceptions import ClientError
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.parser.parser import Parser
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import to_py27_compatible_template, undo_mark_unicode_str_in_template
from samtranslator.yaml_helper import yaml_parse

from sluice_local.cfn_adapt import OUTPUT_MARKER, Adjusted, Deferred, Skipped, adapt

__all__ = [
    "Adjusted",
    "Created",
    "DeployError",
    "Deployment",
    "FunctionSpec",
    "Pending",
    "Skipped",
    "connect_event_sources",
    "deploy_template",
]

logger = logging.getLogger(__name__)

# (resource type, property holding a local path, what the S3 location looks like there)
_PACKAGED = (
    ("AWS::Serverless::Function", "CodeUri", "uri"),
    ("AWS::Serverless::LayerVersion", "ContentUri", "uri"),
    ("AWS::Lambda::Function", "Code", "code"),
    ("AWS::Lambda::LayerVersion", "Content", "code"),
    ("AWS::Serverless::StateMachine", "DefinitionUri", "uri"),
    ("AWS::StepFunctions::StateMachine", "DefinitionS3Location", "location"),
)
_ZIP_SKIP = {"__pycache__", ".DS_Store", ".pytest_cache"}
_CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
_STACK_TIMEOUT_SECONDS = 120


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    physical_name: str
    arn: str
    # The function's code folder: relative to the deployment root when inside it (functions/api),
    # else absolute; None when the code is not a local folder (InlineCode, an S3 zip).
    code_dir: Path | None
    handler: str
    environment: dict[str, str]
    timeout: int
    memory: int
    # Folders of the template's own layers, in order; a Python layer's folder (or its python/)
    # is what Lambda puts on sys.path under /opt/python.
    layer_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Created:
    """Created by local mode through a service API, because moto's CloudFormation does not."""

    logical_id: str
    type: str  # the resource type, with the property applied when only that was ("AWS::S3::Bucket ...")
    physical_id: str
    reason: str  # how, and why not by moto's CloudFormation


@dataclass(frozen=True)
class Pending:
    """A deferred resource (or property) with its intrinsic functions resolved, not created yet."""

    logical_id: str
    type: str
    part: str | None
    properties: dict[str, Any]


@dataclass
class Deployment:
    stack_name: str
    region: str
    root: Path
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id
    resource_types: dict[str, str]
    functions: dict[str, FunctionSpec]  # by logical id
    skipped: list[Skipped]
    adjusted: list[Adjusted] = field(default_factory=list)
    # The SAM translation before anything was left out (the API definitions the local gateway
    # serves are there), and the template as created in moto.
    translated: dict[str, Any] = field(default_factory=dict, repr=False)
    template: dict[str, Any] = field(default_factory=dict, repr=False)
    # Created through the APIs after the stack (connect_event_sources), and what still waits for it.
    created: list[Created] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    aws_url: str = ""


def deploy_template(
    template_path: Path | str,
    *,
    aws_url: str,
    stack_name: str,
    region: str,
    parameters: dict[str, str] | None = None,
    root: Path | str | None = None,
    connect_events: bool = True,
) -> Deployment:
    """Create `stack_name` from the SAM template in the AWS at `aws_url`.

    `parameters` override the template's defaults. Relative CodeUri/ContentUri/DefinitionUri paths
    resolve against `root` (default: the template's folder, as sam does).

    `connect_events=False` leaves topic subscriptions and bucket notifications pending for
    connect_event_sources(): a caller that runs the functions in-process must route moto's Lambda
    invocations first, since from then on moto may invoke them (S3 sends a test event to every
    queue and topic of a notification configuration at once).
    """
    template_path = Path(template_path)
    root = Path(root or template_path.parent).resolve()
    parameters = {key: str(value) for key, value in (parameters or {}).items()}
    session = _session(region)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=aws_url)

    sam = yaml_parse(template_path.read_text())
    unknown = sorted(set(parameters) - set(sam.get("Parameters", {})))
    if unknown:
        raise DeployError(f"{template_path.name} declares no parameter {', '.join(unknown)}")
    folders = _package(sam, root, client("s3"), _bucket_name(stack_name), region)
    translated = _translate(sam, parameters, session, client("iam"))
    _inline_definitions(translated, client("s3"))
    adapted = adapt(translated)

    cloudformation = client("cloudformation")
    declared = adapted.template.get("Parameters", {})
    # moto splits a list parameter (CommaDelimitedList, List<...>) only when it is passed: its default
    # would stay one string, and !Join over it would join its characters. Pass list defaults too.
    passed = {k: v for k, v in parameters.items() if k in declared}
    for name, declaration in declared.items():
        kind = str(declaration.get("Type", ""))
        if (
            name not in passed
            and "Default" in declaration
            and (kind == "CommaDelimitedList" or kind.startswith("List<"))
        ):
            passed[name] = str(declaration["Default"])
    try:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(adapted.template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in passed.items()],
            Capabilities=_CAPABILITIES,
        )
    except ClientError as error:
        raise DeployError(
            f"moto refused stack {stack_name!r}: {_client_error_text(error)} "
            "(for a 500, moto's traceback is in the log above)"
        ) from error
    stack = _wait_for_stack(cloudformation, stack_name)

    resources, resource_types = {}, {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        for summary in page["StackResourceSummaries"]:
            resources[summary["LogicalResourceId"]] = summary.get("PhysicalResourceId", "")
            resource_types[summary["LogicalResourceId"]] = summary["ResourceType"]
    resources.pop("", None)  # moto lists a nameless row for resources it skipped itself
    resource_types.pop("", None)
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    local_outputs = {key: value for key, value in outputs.items() if key in adapted.local_outputs}
    outputs = {key: value for key, value in outputs.items() if key not in adapted.local_outputs}
    pending, skipped = _resolve_deferred(adapted.deferred, local_outputs)
    functions = _read_functions(adapted.template, resources, folders, root, client("lambda"))
    deployment = Deployment(
        stack_name=stack_name,
        region=region,
        root=root,
        outputs=outputs,
        resources=resources,
        resource_types=resource_types,
        functions=functions,
        skipped=adapted.skipped + skipped,
        adjusted=adapted.adjusted,
        translated=translated,
        template=adapted.template,
        pending=pending,
        aws_url=aws_url,
    )
    if connect_events:
        connect_event_sources(deployment)
    return deployment


def _session(region: str) -> Any:
    return boto3.session.Session(
        # Never the user's AWS profile (AWS_PROFILE naming a missing one would even fail here).
        botocore_session=botocore.session.Session(session_vars={"profile": (None, None, None, None)}),
        region_name=region,
        aws_access_key_id="local",  # the embedded AWS takes any credentials
        aws_secret_access_key="local",  # noqa: S106
    )


# ---------------------------------------------------------------------- package (as `sam package`)
def _package(sam: dict[str, Any], root: Path, s3: Any, bucket: str, region: str) -> dict[str, Path]:
    """Upload every local code folder to S3 in place of its path; returns S3 key -> folder."""
    _ensure_bucket(s3, bucket, region)
    folders: dict[str, Path] = {}

    def upload(path_text: str, form: str) -> Any:
        path = (root / path_text).resolve()
        if path.is_dir():
            body = _zip_folder(path)
            name = _relative(path, root) if _relative(path, root) != path else Path(path.name)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-") or "code"
            key = f"{slug}-{hashlib.sha256(body).hexdigest()[:16]}.zip"
            folders[key] = path
        elif path.is_file():
            body = path.read_bytes()
            key = f"{path.stem}-{hashlib.sha256(body).hexdigest()[:16]}{path.suffix}"
        else:
            raise DeployError(f"code path {path_text!r} does not exist (resolved against {root})")
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        if form == "uri":
            return f"s3://{bucket}/{key}"
        return {"S3Bucket": bucket, "S3Key": key} if form == "code" else {"Bucket": bucket, "Key": key}

    globals_function = sam.get("Globals", {}).get("Function", {})
    if _is_local_path(globals_function.get("CodeUri")):
        globals_function["CodeUri"] = upload(globals_function["CodeUri"], "uri")
    for resource in sam.get("Resources", {}).values():
        properties = resource.setdefault("Properties", {})
        for resource_type, name, form in _PACKAGED:
            if resource.get("Type") == resource_type and _is_local_path(properties.get(name)):
                properties[name] = upload(properties[name], form)
    return folders


def _inline_definitions(template: dict[str, Any], s3: Any) -> None:
    """moto's state machines read only DefinitionString: inline what DefinitionS3Location names.

    The text goes in as it is, so `${Name}` placeholders outside JSON strings work, as on AWS.
    """
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        location = properties.get("DefinitionS3Location")
        if resource["Type"] == "AWS::StepFunctions::StateMachine" and isinstance(location, dict):
            body = s3.get_object(Bucket=location["Bucket"], Key=location["Key"])["Body"].read()
            properties["DefinitionString"] = body.decode()
            del properties["DefinitionS3Location"]


def _is_local_path(value: Any) -> bool:
    return isinstance(value, str) and not value.startswith("s3://")


def _zip_folder(folder: Path) -> bytes:
    """The folder as Lambda sees it; byte-identical for identical content (fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_dir() or _ZIP_SKIP & set(relative.parts) or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _bucket_name(stack_name: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", f"{stack_name.lower()}-artifacts").strip("-")
    return name[:63].rstrip("-")


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **extra)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


# ---------------------------------------------------------------------- translate (SAM -> CloudFormation)
def _translate(sam: dict[str, Any], parameters: dict[str, str], session: Any, iam: Any) -> dict[str, Any]:
    """samtranslator's transform(), with the region given explicitly.

    transform() builds a default boto3 session for the region and partition (failing without
    AWS_DEFAULT_REGION); the Translator takes ours instead, as sam-cli does. Managed policy names
    not bundled with samtranslator are looked up in the embedded IAM, never in AWS.
    """
    sam = copy.deepcopy(sam)
    values: dict[str, Any] = dict(parameters)
    to_py27_compatible_template(sam, values)
    loader = ManagedPolicyLoader(iam)
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    translator = Translator(None, Parser(), boto_session=session, metrics=metrics)
    translated = translator.translate(sam, parameter_values=values, get_managed_policy_map=loader.load)
    metrics.publish()  # to nowhere; samtranslator warns about metrics left unpublished
    return undo_mark_unicode_str_in_template(translated)


# ---------------------------------------------------------------------- create and read back
def _wait_for_stack(cloudformation: Any, stack_name: str) -> dict[str, Any]:
    deadline = time.monotonic() + _STACK_TIMEOUT_SECONDS
    while True:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name!r} still {status} after {_STACK_TIMEOUT_SECONDS} s")
        time.sleep(0.1)
    if status != "CREATE_COMPLETE":
        events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
        failures = [
            f"{e['LogicalResourceId']} ({e.get('ResourceType')}): {e.get('ResourceStatusReason', 'no reason given')}"
            for e in events
            if e["ResourceStatus"].endswith("_FAILED")
        ]
        reason = stack.get("StackStatusReason") or "no reason given"
        raise DeployError(
            f"stack {stack_name!r} ended {status}: {reason}; " + ("; ".join(failures) or "no failed event")
        )
    return stack


def _read_functions(
    template: dict[str, Any], resources: dict[str, str], folders: dict[str, Path], root: Path, lambda_client: Any
) -> dict[str, FunctionSpec]:
    declared = template.get("Resources", {})

    def folder_of(code: Any) -> Path | None:
        folder = folders.get(code.get("S3Key", "")) if isinstance(code, dict) else None
        return _relative(folder, root) if folder else None

    functions = {}
    for logical_id, resource in declared.items():
        if resource["Type"] != "AWS::Lambda::Function" or logical_id not in resources:
            continue
        properties = resource.get("Properties", {})
        layer_dirs = []
        for layer in properties.get("Layers", []):
            # The template's own layers (Ref to a LayerVersion); published ARNs have no local code.
            layer_resource = declared.get(layer.get("Ref", "")) if isinstance(layer, dict) else None
            layer_dir = folder_of(layer_resource.get("Properties", {}).get("Content")) if layer_resource else None
            if layer_dir is not None:
                layer_dirs.append(layer_dir)
        config = lambda_client.get_function_configuration(FunctionName=resources[logical_id])
        functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            physical_name=config["FunctionName"],
            arn=config["FunctionArn"],
            code_dir=folder_of(properties.get("Code")),
            handler=config.get("Handler") or "",
            environment={k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()},
            timeout=int(config.get("Timeout", 3)),
            memory=int(config.get("MemorySize", 128)),
            layer_dirs=tuple(layer_dirs),
        )
    return functions


def _client_error_text(error: ClientError) -> str:
    text = error.response.get("Error", {}).get("Message") or str(error)
    return re.sub(r"<[^>]+>", " ", text).strip()


# ---------------------------------------------------------------------- what moto's CloudFormation leaves to the APIs
_NO_VALUE = object()  # an output moto left out although its condition holds: AWS::NoValue
# Subscription properties that are attributes of the SNS API, FilterPolicyScope first (it decides
# how FilterPolicy is validated).
_SUBSCRIPTION_ATTRIBUTES = (
    "FilterPolicyScope",
    "FilterPolicy",
    "RawMessageDelivery",
    "DeliveryPolicy",
    "RedrivePolicy",
    "ReplayPolicy",
    "SubscriptionRoleArn",
)
# CloudFormation's NotificationConfiguration lists -> the S3 API's (list, destination, API destination).
_NOTIFICATION_KINDS = (
    ("LambdaConfigurations", "LambdaFunctionConfigurations", "Function", "LambdaFunctionArn"),
    ("QueueConfigurations", "QueueConfigurations", "Queue", "QueueArn"),
    ("TopicConfigurations", "TopicConfigurations", "Topic", "TopicArn"),
)


def _label(item: Deferred | Pending) -> str:
    return item.type if item.part is None else f"{item.type} {item.part}"


def _resolve_deferred(deferred: list[Deferred], outputs: dict[str, str]) -> tuple[list[Pending], list[Skipped]]:
    """Put moto's values (read back as hidden outputs) in place of the intrinsic functions."""
    pending, skipped = [], []
    for item in deferred:
        if item.condition_output is not None and item.condition_output not in outputs:
            if item.part is None:  # a property of a resource that is not there is not missing
                reason = f"condition {item.condition} is false (not created on AWS either)"
                skipped.append(Skipped(item.logical_id, item.type, reason))
            continue
        properties = _substitute(item.properties, outputs)
        pending.append(Pending(item.logical_id, item.type, item.part, properties))
    return pending, skipped


def _substitute(node: Any, outputs: dict[str, str]) -> Any:
    if isinstance(node, list):
        values = [_substitute(item, outputs) for item in node]
        return [value for value in values if value is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if set(node) == {OUTPUT_MARKER}:
        return outputs.get(node[OUTPUT_MARKER], _NO_VALUE)
    values = {key: _substitute(value, outputs) for key, value in node.items()}
    return {key: value for key, value in values.items() if value is not _NO_VALUE}


def connect_event_sources(deployment: Deployment) -> None:
    """Create the deployment's pending subscriptions and bucket notifications through the APIs.

    Each lands in deployment.created (subscriptions also in resources), or in deployment.skipped
    with the API's refusal; from here on moto delivers to them (SNS publish, S3 events).
    """
    session = _session(deployment.region)
    creators = {
        ("AWS::SNS::Subscription", None): _create_subscription,
        ("AWS::S3::Bucket", "NotificationConfiguration"): _apply_bucket_notifications,
        ("AWS::S3::Bucket", "VersioningConfiguration"): _apply_bucket_versioning,
    }
    for item in deployment.pending:
        creator = creators.get((item.type, item.part))
        if creator is None:
            deployment.skipped.append(Skipped(item.logical_id, _label(item), "local mode cannot create it"))
            continue
        try:
            created = creator(item, deployment, session)
        except ClientError as error:
            reason = f"the embedded AWS refused it: {_client_error_text(error)}"
            logger.warning("%s (%s) not created: %s", item.logical_id, _label(item), reason)
            deployment.skipped.append(Skipped(item.logical_id, _label(item), reason))
            continue
        if created is None:
            continue
        deployment.created.append(created)
        if item.part is None:
            deployment.resources[item.logical_id] = created.physical_id
            deployment.resource_types[item.logical_id] = item.type
    deployment.pending = []


def _create_subscription(item: Pending, deployment: Deployment, session: Any) -> Created:
    properties = item.properties
    sns = session.client(
        "sns", endpoint_url=deployment.aws_url, region_name=properties.get("Region") or deployment.region
    )
    arn = sns.subscribe(
        TopicArn=properties["TopicArn"],
        Protocol=properties["Protocol"],
        Endpoint=properties.get("Endpoint", ""),
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    refused = []
    for name in _SUBSCRIPTION_ATTRIBUTES:
        if name not in properties:
            continue
        try:
            sns.set_subscription_attributes(
                SubscriptionArn=arn, AttributeName=name, AttributeValue=_attribute_text(properties[name])
            )
        except ClientError as error:
            refused.append(f"{name} ({_client_error_text(error)})")
    reason = "created through the SNS API (moto's CloudFormation cannot create it)"
    if refused:
        reason += "; attributes the embedded SNS refused: " + ", ".join(refused)
        logger.warning("%s: %s", item.logical_id, reason)
    return Created(item.logical_id, item.type, arn, reason)


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _apply_bucket_versioning(item: Pending, deployment: Deployment, session: Any) -> Created | None:
    """A versioned bucket's S3 events carry each object's versionId, which the drop's job ids use."""
    s3 = session.client("s3", endpoint_url=deployment.aws_url)
    bucket = deployment.resources[item.logical_id]
    if s3.get_bucket_versioning(Bucket=bucket).get("Status"):
        return None  # moto's CloudFormation applied it itself
    status = item.properties["VersioningConfiguration"].get("Status", "Enabled")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
    reason = "applied through the S3 API (moto's CloudFormation ignores it)"
    return Created(item.logical_id, _label(item), bucket, reason)


def _apply_bucket_notifications(item: Pending, deployment: Deployment, session: Any) -> Created | None:
    s3 = session.client("s3", endpoint_url=deployment.aws_url)
    bucket = deployment.resources[item.logical_id]
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    if any(key in current for _, key, _, _ in _NOTIFICATION_KINDS) or "EventBridgeConfiguration" in current:
        return None  # moto's CloudFormation applied it itself
    configuration = _notification_configuration(item.properties["NotificationConfiguration"])
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)
    reason = "applied through the S3 API (moto's CloudFormation ignores it)"
    return Created(item.logical_id, _label(item), bucket, reason)


def _notification_configuration(template: dict[str, Any]) -> dict[str, Any]:
    """A bucket's NotificationConfiguration as CloudFormation spells it, as the S3 API does."""
    configuration: dict[str, Any] = {}
    for template_key, api_key, destination, api_destination in _NOTIFICATION_KINDS:
        for entry in template.get(template_key, []):
            converted: dict[str, Any] = {api_destination: entry[destination], "Events": [entry["Event"]]}
            rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            if rules:
                # S3 takes the rule names in any case; moto matches only "prefix" and "suffix".
                converted["Filter"] = {
                    "Key": {"FilterRules": [{"Name": rule["Name"].lower(), "Value": rule["Value"]} for rule in rules]}
                }
            configuration.setdefault(api_key, []).append(converted)
    if str(template.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled", "")).lower() == "true":
        configuration["EventBridgeConfiguration"] = {}
    return configuration
