"""Deploy template.yaml into the embedded AWS, as `sam package` + `sam deploy` would, offline.

The SAM template is translated here (samtranslator, no AWS call), local code folders are zipped
into an S3 bucket of the embedded AWS, what moto cannot create is left out (cfn_adapt, with the
reasons), and moto's CloudFormation creates the rest. What the stack holds is then read back from
moto (physical ids, outputs, each function's resolved environment) rather than re-derived.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
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

from sluice_local.cfn_adapt import Adjusted, Skipped, adapt

__all__ = ["Adjusted", "DeployError", "Deployment", "FunctionSpec", "Skipped", "deploy_template"]

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


def deploy_template(
    template_path: Path | str,
    *,
    aws_url: str,
    stack_name: str,
    region: str,
    parameters: dict[str, str] | None = None,
    root: Path | str | None = None,
) -> Deployment:
    """Create `stack_name` from the SAM template in the AWS at `aws_url`.

    `parameters` override the template's defaults. Relative CodeUri/ContentUri/DefinitionUri paths
    resolve against `root` (default: the template's folder, as sam does).
    """
    template_path = Path(template_path)
    root = Path(root or template_path.parent).resolve()
    parameters = {key: str(value) for key, value in (parameters or {}).items()}
    session = boto3.session.Session(
        # Never the user's AWS profile (AWS_PROFILE naming a missing one would even fail here).
        botocore_session=botocore.session.Session(session_vars={"profile": (None, None, None, None)}),
        region_name=region,
        aws_access_key_id="local",  # the embedded AWS takes any credentials
        aws_secret_access_key="local",  # noqa: S106
    )

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
    try:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(adapted.template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items() if k in declared],
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
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    functions = _read_functions(adapted.template, resources, folders, root, client("lambda"))
    return Deployment(
        stack_name=stack_name,
        region=region,
        root=root,
        outputs=outputs,
        resources=resources,
        resource_types=resource_types,
        functions=functions,
        skipped=adapted.skipped,
        adjusted=adapted.adjusted,
        translated=translated,
        template=adapted.template,
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
