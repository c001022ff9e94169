"""Who called: the tenant the authorizer put in the request context, else the SigV4 principal, else 401."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sluice.auth.caller import Caller, caller_from_request_context
from sluice.auth.roles import Role, require_operator, tenant_problem
from sluice.errors import IdentityNotAccepted, OperatorRequired, Unauthenticated
from sluice.settings import get_settings
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


# --- roles -----------------------------------------------------------------------------------------


def test_an_api_key_caller_is_a_consumer_unless_the_authorizer_says_operator():
    context = api_request_context()
    context["authorizer"] = {"tenant": "acme", "key_id": "key_0123456789ab", "auth": "api_key"}
    assert caller_from_request_context(context).role == Role.CONSUMER

    context["authorizer"]["role"] = "operator"
    assert caller_from_request_context(context).role == Role.OPERATOR


@pytest.mark.parametrize(
    ("patterns", "role"),
    [
        ("", Role.CONSUMER),
        ("arn:aws:iam::123456789012:role/platform-*", Role.CONSUMER),
        ("arn:aws:iam::123456789012:role/batch-*", Role.OPERATOR),
        ("arn:aws:iam::123456789012:role/batch-scorer", Role.OPERATOR),
        # Patterns match the role, not the session: a session name cannot make anyone an operator.
        ("arn:aws:sts::123456789012:assumed-role/*", Role.CONSUMER),
        ("arn:aws:iam::999999999999:role/batch-scorer, arn:aws:iam::123456789012:role/batch-?corer", Role.OPERATOR),
    ],
)
def test_an_iam_caller_is_an_operator_only_when_its_role_matches_operator_principals(monkeypatch, patterns, role):
    monkeypatch.setenv("SLUICE_OPERATOR_PRINCIPALS", patterns)
    get_settings.cache_clear()
    context = api_request_context()
    context["identity"]["userArn"] = ROLE_ARN

    try:
        assert caller_from_request_context(context).role == role
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_require_operator_names_the_route_for_a_consumer():
    consumer = SimpleNamespace(caller=Caller(identity="acme", auth="api_key"))
    operator = SimpleNamespace(caller=Caller(identity="platform", auth="api_key", role=Role.OPERATOR))

    with pytest.raises(OperatorRequired) as raised:
        require_operator(consumer, "GET /v1/approvals")

    assert (raised.value.status, raised.value.code) == (403, "operator_required")
    assert raised.value.message.startswith("GET /v1/approvals needs an operator")
    assert require_operator(operator, "GET /v1/approvals") is None


@pytest.mark.parametrize("tenant", ["acme", "team-risk", "platform", "a", "x_1", "0" * 63])
def test_valid_tenant_names(tenant):
    assert tenant_problem(tenant) is None


@pytest.mark.parametrize(
    "tenant", ["", " ", "Acme", "-acme", "_acme", "acme corp", "a/b", "a:b", "a.b", "arn:aws:iam::1:role/x", "a" * 64]
)
def test_invalid_tenant_names(tenant):
    assert tenant_problem(tenant)


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
