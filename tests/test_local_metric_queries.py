"""GetMetricData on the embedded AWS as the deployment guards need it: percentiles and namespaces kept apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from sluice_local.metric_queries import percentile

DIMENSIONS = [{"Name": "EndpointName", "Value": "sluice-iris"}, {"Name": "VariantName", "Value": "v1"}]


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 99) is None


@pytest.fixture
def cloudwatch(moto):
    return boto3.client(
        "cloudwatch", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def query(cloudwatch, namespace: str, name: str, stat: str, dimensions=DIMENSIONS) -> list[float]:
    now = datetime.now(UTC)
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
                    "Period": 600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=5),
    )
    return answer["MetricDataResults"][0]["Values"]


def test_a_p99_is_computed_from_the_values_put(cloudwatch):
    now = datetime.now(UTC)
    data = [
        {"MetricName": "ModelLatency", "Dimensions": DIMENSIONS, "Value": float(i * 1000), "Timestamp": now}
        for i in range(1, 101)
    ]
    for start in range(0, 100, 20):
        cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=data[start : start + 20])

    assert query(cloudwatch, "AWS/SageMaker", "ModelLatency", "p99") == [99000.0]
    assert query(cloudwatch, "AWS/SageMaker", "ModelLatency", "Sum") == [5050000.0]


def test_a_query_with_dimensions_keeps_to_its_namespace(cloudwatch):
    now = datetime.now(UTC)
    dimensions = [{"Name": "EndpointName", "Value": "other"}, {"Name": "VariantName", "Value": "v1"}]
    for namespace, value in (("AWS/SageMaker", 3.0), ("Sluice", 40.0)):
        cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[{"MetricName": "Invocations", "Dimensions": dimensions, "Value": value, "Timestamp": now}],
        )

    assert query(cloudwatch, "AWS/SageMaker", "Invocations", "Sum", dimensions) == [3.0]
    assert query(cloudwatch, "Sluice", "Invocations", "Sum", dimensions) == [40.0]
