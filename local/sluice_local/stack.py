"""Bringing the whole platform up on one machine, and down again.

Order matters: the network guard first (fail closed), then the embedded AWS, the model processes
and runtime stand-ins, then the template's resources and functions, then the data they need
(catalog, SageMaker endpoint, an API key), and the API last, once everything it calls is ready.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from sluice_local import netguard
from sluice_local.api_routes import load_api
from sluice_local.config import ROOT, LocalConfig, check_parameter_overrides
from sluice_local.gateway import LocalApiGateway

logger = logging.getLogger(__name__)

ENDPOINT = "sluice-iris"
# The same models behind an asynchronous endpoint (InvokeEndpointAsync), reporting to the stack's async topics.
ASYNC_ENDPOINT = "sluice-iris-async"
# Two model versions behind one endpoint, as two production variants with these traffic weights.
VARIANTS = (("v1", 0.8), ("v2", 0.2))
# The model processes local mode runs: the two versions, and `degraded` (models/iris/serve.py's degraded mode:
# about a third of answers 500, the rest below 0.7 confidence), the Model sluice-iris-degraded a deployment
# must roll back.
MODEL_VERSIONS = ("v1", "v2", "degraded")
LOCAL_CATALOG = ROOT / "local" / "catalog.json"
# The training images local mode plays, as the commands that stand for them (local/catalog.json's trainers).
TRAINING_IMAGES = {"sluice/iris-trainer:local": [sys.executable, str(ROOT / "models" / "iris" / "trainer.py")]}


@dataclass
class Started:
    api_url: str
    aws_url: str
    sagemaker_url: str
    bedrock_url: str
    api_key: str
    key_generated: bool
    buckets: list[str]
    resources: dict[str, str]
    skipped: list[Any]
    models: dict[str, str] = field(default_factory=dict)
    created: list[Any] = field(default_factory=list)  # by local mode through the APIs (deploy.Created)
    # The operator key (tenant platform): approvals and the other operations routes.
    operator_key: str = ""
    operator_key_generated: bool = False
    # The template's schedules local mode fires itself (schedules.Schedule), and those it does not (NotRun).
    schedules: list[Any] = field(default_factory=list)
    schedules_not_run: list[Any] = field(default_factory=list)


class LocalStack:
    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()
        self._stoppers: list[Any] = []

    # ------------------------------------------------------------------ up
    def start(self) -> Started:
        from sluice_local import emf
        from sluice_local.artifacts import TrainedModels
        from sluice_local.bedrock import LocalBedrock
        from sluice_local.deploy import connect_event_sources, deploy_template
        from sluice_local.emulator import start_moto
        from sluice_local.lambdas import LambdaRunner, function_environment, install_moto_lambda_router
        from sluice_local.metric_sink import MetricSink
        from sluice_local.model_lookup import ModelLookup
        from sluice_local.models import start_model
        from sluice_local.runtime_metrics import attach as attach_runtime_metrics
        from sluice_local.sagemaker_runtime import AsyncConfig, LocalSageMakerRuntime
        from sluice_local.scheduler import LocalScheduler
        from sluice_local.schedules import read_schedules, stack_values
        from sluice_local.training import install_training_runner
        from sluice_local.transform import install_transform_runner

        config = self.config
        # Before anything starts: a mistyped override fails at once, naming the template's parameters.
        parameters = deploy_parameters(config)
        netguard.install()
        _use_local_credentials(config.region)

        moto = start_moto(config.host, config.aws_port)
        self._stoppers.append(moto.stop)
        os.environ["AWS_ENDPOINT_URL"] = moto.url
        # Metrics reach the embedded CloudWatch in the background, once a second (and at stop, after the
        # runtime and the API that record them have stopped).
        sink = MetricSink(boto3.client("cloudwatch")).start()
        self._stoppers.append(sink.stop)
        # The functions' EMF lines (Powertools prints them) become metrics, as CloudWatch Logs extracts them.
        self._stoppers.append(emf.install(sink))

        models = {}
        # In parallel: each process takes about a second to import scikit-learn and load its model.
        with ThreadPoolExecutor(len(MODEL_VERSIONS)) as pool:
            starts = {
                version: pool.submit(start_model, version, config.state_dir / "models" / version, host=config.host)
                for version in MODEL_VERSIONS
            }
            for future in starts.values():
                with contextlib.suppress(Exception):
                    self._stoppers.append(future.result().stop)
            for version, future in starts.items():
                models[version] = future.result()  # the first failure, now that every started one will be stopped
        sagemaker = boto3.client("sagemaker")
        # Trained models (a ModelDataUrl) get a model process of their own, started at first use.
        trained = TrainedModels(moto.url, config.region, config.state_dir / "trained-models", host=config.host)
        self._stoppers.append(trained.stop)
        lookup = ModelLookup(sagemaker, {version: running.url for version, running in models.items()}, trained)

        # Transform jobs (CreateTransformJob, from Step Functions too) run against the model processes.
        transforms = install_transform_runner(lookup.model_url, moto.url, config.region)
        self._stoppers.append(transforms.uninstall)
        # Training jobs run for real: the image names the trainer, run under SageMaker's container contract.
        trainings = install_training_runner(
            TRAINING_IMAGES.get,
            moto.url,
            config.region,
            interrupt_at_epoch=config.spot_interrupt_at_epoch,
            state_dir=config.state_dir / "training",
        )
        self._stoppers.append(trainings.uninstall)

        def resolve_async(endpoint_name: str) -> AsyncConfig | None:
            try:
                endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
            except ClientError:
                return None
            endpoint_config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
            return AsyncConfig.from_api(endpoint_config.get("AsyncInferenceConfig"))

        runtime = LocalSageMakerRuntime(
            lookup.variants,
            resolve_async=resolve_async,
            aws_url=moto.url,
            region=config.region,
            # SageMaker's per-variant endpoint metrics (AWS/SageMaker), from every invocation.
            metrics=attach_runtime_metrics(sink),
        )
        sagemaker_url = runtime.start(config.host, config.sagemaker_port)
        self._stoppers.append(runtime.stop)
        bedrock = LocalBedrock()
        bedrock_url = bedrock.start(config.host, config.bedrock_port)
        self._stoppers.append(bedrock.stop)

        # Subscriptions and bucket notifications wait until moto runs the functions in-process.
        deployment = deploy_template(
            config.template,
            aws_url=moto.url,
            stack_name=config.stack_name,
            region=config.region,
            connect_events=False,
            parameters=parameters,
        )
        os.environ.update(function_environment(deployment, moto.url, config.region))
        os.environ.update(
            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker_url,
            AWS_ENDPOINT_URL_BEDROCK_RUNTIME=bedrock_url,
            # No X-Ray daemon locally; the catalog is re-read quickly so edits show up.
            POWERTOOLS_TRACE_DISABLED="true",
            SLUICE_CATALOG_TTL_SECONDS=os.environ.get("SLUICE_LOCAL_CATALOG_TTL_SECONDS", "5"),
        )
        runner = LambdaRunner(deployment.functions, ROOT)
        install_moto_lambda_router(runner)
        # From here on moto invokes the functions (SNS publish, S3 events, S3's test event to queues).
        connect_event_sources(deployment)

        self._store_catalog(deployment)
        _register_endpoint(sagemaker)
        _register_async_endpoint(sagemaker, deployment.outputs)
        api_key, generated, operator_key, operator_generated = self._create_api_keys(deployment)

        api = load_api(config.template, "PublicApi")
        gateway = LocalApiGateway(api, runner.invoke, region=config.region)
        server = gateway.serve(config.host, config.api_port)
        self._stoppers.append(lambda: (server.shutdown(), server.server_close()))

        # moto stores schedules but never fires them: local mode does, once everything they call is up.
        schedules, not_run = read_schedules(deployment.translated, stack_values(deployment, parameters))
        for item in not_run:
            logger.warning("schedule %s (%s) does not run locally: %s", item.logical_id, item.type, item.reason)
        scheduler = LocalScheduler(schedules, runner)
        scheduler.start()
        self._stoppers.append(scheduler.stop)

        buckets = [b["Name"] for b in boto3.client("s3").list_buckets().get("Buckets", [])]
        return Started(
            api_url=config.url(server.server_address[1]),
            aws_url=moto.url,
            sagemaker_url=sagemaker_url,
            bedrock_url=bedrock_url,
            api_key=api_key,
            key_generated=generated,
            operator_key=operator_key,
            operator_key_generated=operator_generated,
            buckets=buckets,
            resources=deployment.resources,
            skipped=list(deployment.skipped),
            models={version: running.url for version, running in models.items()},
            created=list(deployment.created),
            schedules=schedules,
            schedules_not_run=not_run,
        )

    def _store_catalog(self, deployment: Any) -> None:
        name = deployment.outputs.get("CatalogParameterName") or deployment.resources["CatalogParameter"]
        catalog = json.loads(LOCAL_CATALOG.read_text())
        boto3.client("ssm").put_parameter(
            Name=name, Value=json.dumps(catalog), Type="String", Tier="Advanced", Overwrite=True
        )

    def _create_api_keys(self, deployment: Any) -> tuple[str, bool, str, bool]:
        """A consumer key (tenant `local`) and an operator key (tenant `platform`)."""
        from sluice.auth.keys import create_key

        apigateway = boto3.client("apigateway")
        # The template's usage plan belongs to the REST API, which local mode serves itself.
        plan = apigateway.create_usage_plan(name=f"{self.config.stack_name}-local")
        created = {}
        for tenant, role, plain_key in (
            ("local", "consumer", self.config.api_key),
            ("platform", "operator", self.config.operator_key),
        ):
            created[role] = create_key(
                dynamodb=boto3.client("dynamodb"),
                apigateway=apigateway,
                table=deployment.resources["ApiKeysTable"],
                tenant=tenant,
                usage_plan_id=plan["id"],
                name=f"make local ({role})",
                plain_key=plain_key,
                role=role,
            ).plain_key
        return (
            created["consumer"],
            self.config.api_key is None,
            created["operator"],
            self.config.operator_key is None,
        )

    # ------------------------------------------------------------------ down
    def stop(self) -> None:
        while self._stoppers:
            stopper = self._stoppers.pop()
            # Stopping the rest matters more than one failure.
            with contextlib.suppress(Exception):
                stopper()


def deploy_parameters(config: LocalConfig) -> dict[str, str]:
    """The template parameters local mode deploys with: its own defaults, then SLUICE_LOCAL_PARAMETER_OVERRIDES."""
    from samtranslator.yaml_helper import yaml_parse

    declared = yaml_parse(config.template.read_text()).get("Parameters", {})
    check_parameter_overrides(config.parameter_overrides, declared, config.template)
    # Local transform and training jobs finish in seconds: poll them as often (AWS defaults are minutes).
    local = {
        "TransformPollSeconds": os.environ.get("SLUICE_LOCAL_TRANSFORM_POLL_SECONDS", "2"),
        # The wait doubles per status check; locally it stops growing at a few seconds.
        "TransformPollMaxSeconds": os.environ.get("SLUICE_LOCAL_TRANSFORM_POLL_MAX_SECONDS", "8"),
        "TransformRetryWaitSeconds": os.environ.get("SLUICE_LOCAL_TRANSFORM_RETRY_WAIT_SECONDS", "5"),
        # Local training jobs take seconds too (iris: 40 epochs in about one).
        "TrainingPollSeconds": os.environ.get("SLUICE_LOCAL_TRAINING_POLL_SECONDS", "2"),
        "TrainingPollMaxSeconds": os.environ.get("SLUICE_LOCAL_TRAINING_POLL_MAX_SECONDS", "8"),
        "TrainingRetryWaitSeconds": os.environ.get("SLUICE_LOCAL_TRAINING_RETRY_WAIT_SECONDS", "2"),
        # Deployments read their guards every few seconds and see endpoint updates finish in about one.
        "DeploymentGuardIntervalSeconds": os.environ.get("SLUICE_LOCAL_DEPLOYMENT_GUARD_INTERVAL_SECONDS", "2"),
        "DeploymentEndpointPollSeconds": os.environ.get("SLUICE_LOCAL_DEPLOYMENT_ENDPOINT_POLL_SECONDS", "1"),
    }
    # Only those the template declares (SLUICE_LOCAL_TEMPLATE may name another one); overrides win.
    return {**{k: v for k, v in local.items() if k in declared}, **config.parameter_overrides}


def _use_local_credentials(region: str) -> None:
    # Never the user's real credentials or profile: local mode talks only to local endpoints.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION=region)  # noqa: S106
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def _register_endpoint(sagemaker: Any) -> None:
    role = "arn:aws:iam::123456789012:role/sluice-local-sagemaker"
    # sluice-iris-v1, sluice-iris-v2 (the endpoint's variants) and sluice-iris-degraded (a deployment's canary).
    for version in MODEL_VERSIONS:
        sagemaker.create_model(
            ModelName=f"{ENDPOINT}-{version}",
            ExecutionRoleArn=role,
            PrimaryContainer={"Image": "sluice/iris:local", "Environment": {"SLUICE_MODEL_VERSION": version}},
        )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{ENDPOINT}-config",
        ProductionVariants=[
            {
                "VariantName": version,
                "ModelName": f"{ENDPOINT}-{version}",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
            for version, weight in VARIANTS
        ],
    )
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{ENDPOINT}-config")


def _register_async_endpoint(sagemaker: Any, outputs: dict[str, str]) -> None:
    """`sluice-iris-async`: the iris models as an async endpoint writing under the data bucket."""
    bucket = outputs.get("DataBucketName")
    if not bucket:
        return
    notifications = {
        key: outputs[output]
        for key, output in (("SuccessTopic", "AsyncSuccessTopicArn"), ("ErrorTopic", "AsyncErrorTopicArn"))
        if outputs.get(output)
    }
    output_config: dict[str, Any] = {
        "S3OutputPath": f"s3://{bucket}/async-endpoint-output/",
        "S3FailurePath": f"s3://{bucket}/async-endpoint-output/failures/",
    }
    if notifications:
        output_config["NotificationConfig"] = notifications
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{ASYNC_ENDPOINT}-config",
        ProductionVariants=[
            {
                "VariantName": version,
                "ModelName": f"{ENDPOINT}-{version}",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
            for version, weight in VARIANTS
        ],
        AsyncInferenceConfig={"OutputConfig": output_config},
    )
    sagemaker.create_endpoint(EndpointName=ASYNC_ENDPOINT, EndpointConfigName=f"{ASYNC_ENDPOINT}-config")
