"""Who called: the tenant the authorizer put in the request context, else the SigV4 principal, else 401."""

from __future__ import annotations

import pytest

from sluice.auth.caller import Caller, caller_from_request_context
from sluice.errors import IdentityNotAccepted, Unauthenticated
from tests.conftest import load_event

ROLE_ARN = "arn:aws:sts::123456789012:assumed-role/batch-scorer/session-1"


def api_request_context() -> dict:
    return load_event("api/health.json")["requestContext"]


def test_api_key_caller_is_the_tenant_from_the_authorizer_context():
    context = api_request_context()
    # What API Gateway adds for a Lambda authorizer: its context plus principalId and latency.
    context["authorizer"] = {
        "tenant": "acme",
        "key_id": "key_0123456789ab",
        "auth": "api_key",
        "principalId": "acme",
        "integrationLatency": 12,
    }

    caller = caller_from_request_context(context)

    assert caller == Caller(identity="acme", auth="api_key", key_id="key_0123456789ab")


def test_authorizer_tenant_wins_over_an_iam_identity():
    context = api_request_context()
    context["authorizer"] = {"tenant": "acme", "key_id": "key_0123456789ab"}
    context["identity"]["userArn"] = ROLE_ARN

    assert caller_from_request_context(context).identity == "acme"


def test_iam_caller_is_the_principal_arn():
    context = api_request_context()
    context["identity"].update(userArn=ROLE_ARN, caller="AROAEXAMPLE:session-1", accountId="123456789012")

    caller = caller_from_request_context(context)

    # A role session is identified by its role: catalog rules name roles, not sessions.
    assert caller == Caller(identity="arn:aws:iam::123456789012:role/batch-scorer", auth="iam")
    assert caller.key_id is None


@pytest.mark.parametrize(
    "user_arn",
    [
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::123456789012:role/service-role/batch",
        "arn:aws-us-gov:iam::123456789012:root",
    ],
)
def test_iam_users_and_other_principals_keep_their_arn(user_arn):
    context = api_request_context()
    context["identity"]["userArn"] = user_arn

    assert caller_from_request_context(context).identity == user_arn


def test_role_sessions_in_other_partitions_map_to_their_role():
    context = api_request_context()
    context["identity"]["userArn"] = "arn:aws-us-gov:sts::123456789012:assumed-role/scoring-nightly/i-0abc"

    assert caller_from_request_context(context).identity == "arn:aws-us-gov:iam::123456789012:role/scoring-nightly"


def test_iam_caller_when_the_authorizer_context_has_no_tenant():
    context = api_request_context()
    context["authorizer"] = {"principalId": "someone"}
    context["identity"]["userArn"] = ROLE_ARN

    assert caller_from_request_context(context).auth == "iam"


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"authorizer": None, "identity": None},
        {"authorizer": {"tenant": ""}, "identity": {"userArn": None}},
        api_request_context(),  # the health event: no authorizer, userArn null
    ],
)
def test_neither_is_unauthenticated_401(context):
    with pytest.raises(Unauthenticated) as raised:
        caller_from_request_context(context)

    assert raised.value.status == 401
    assert raised.value.body()["error"]["type"] == "authentication_error"
    assert "Bearer" in raised.value.message


# --- principals that cannot identify a caller ----------------------------------------------------


@pytest.mark.parametrize(
    "user_arn",
    [
        "arn:aws:sts::123456789012:federated-user/bob",
        "arn:aws-us-gov:sts::123456789012:federated-user/alice@example.com",
    ],
)
def test_a_federated_user_cannot_claim_a_name_it_chose_itself(user_arn):
    """Any IAM user can GetFederationToken with Name=bob: two of them would share bob's jobs and prefixes."""
    context = api_request_context()
    context["identity"].update(userArn=user_arn, caller="123456789012:bob", user="123456789012:bob")

    with pytest.raises(IdentityNotAccepted) as raised:
        caller_from_request_context(context)

    assert raised.value.status == 403
    assert raised.value.code == "identity_not_accepted"
    assert "GetFederationToken" in raised.value.message
    assert raised.value.details == {"principal_kind": "federated-user"}


@pytest.mark.parametrize(
    "user_arn",
    [
        "arn:aws:sts::123456789012:assumed-role/too/many/parts",
        "arn:aws:iam::123456789012:group/admins",
        "arn:aws:iam::123456789012:user/*",
        "arn:aws:sts::123456789012:root",
        "anonymous",
    ],
)
def test_an_unknown_principal_kind_is_refused_not_trusted_by_accident(user_arn):
    context = api_request_context()
    context["identity"]["userArn"] = user_arn

    with pytest.raises(IdentityNotAccepted) as raised:
        caller_from_request_context(context)

    assert raised.value.status == 403
    assert raised.value.details == {"principal_kind": "unknown"}


def test_an_iam_user_with_a_path_keeps_its_full_arn():
    context = api_request_context()
    context["identity"]["userArn"] = "arn:aws:iam::123456789012:user/division/a_b"

    assert caller_from_request_context(context).identity == "arn:aws:iam::123456789012:user/division/a_b"
