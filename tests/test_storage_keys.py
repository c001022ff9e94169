"""The caller -> storage segment mapping: injective, prefix-free under `<top>/<segment>/`, S3 and IAM safe."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.storage.keys import (
    ASYNC_PREFIX,
    BATCH_OUTPUT_PREFIX,
    MAX_SEGMENT_CHARS,
    UPLOADS_PREFIX,
    async_input_key,
    batch_output_prefix,
    caller_of_segment,
    caller_prefix,
    safe_caller,
    upload_key,
)

TOPS = (ASYNC_PREFIX, UPLOADS_PREFIX, BATCH_OUTPUT_PREFIX)
# S3's "safe" key characters minus "*" ("*", "?" and "$" are wildcards or variables in IAM resource ARNs).
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")

_name_chars = st.sampled_from("abcAZ019-_.:/+=,@é ü☃")
names = st.text(_name_chars, min_size=1, max_size=24)
accounts = st.from_regex(r"\A[0-9]{12}\Z")
partitions = st.sampled_from(["aws", "aws-us-gov", "aws-cn"])
paths = st.lists(st.text(st.sampled_from("abcXYZ09-_.+=,@"), min_size=1, max_size=12), max_size=4).map(
    lambda parts: "".join(f"{part}/" for part in parts)
)
iam_arns = st.one_of(
    st.builds(lambda p, a, path, n: f"arn:{p}:iam::{a}:user/{path}{n}", partitions, accounts, paths, names),
    st.builds(lambda p, a, path, n: f"arn:{p}:iam::{a}:role/{path}{n}", partitions, accounts, paths, names),
    st.builds(lambda p, a: f"arn:{p}:iam::{a}:root", partitions, accounts),
    st.builds(lambda p, a, r, s: f"arn:{p}:sts::{a}:assumed-role/{r}/{s}", partitions, accounts, names, names),
)
tenants = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,62}\Z")
# Anything at all, including lone surrogates and control characters: injectivity must not depend on validation.
anything = st.text(min_size=1, max_size=80)
very_long = st.builds(lambda a, n: f"arn:aws:iam::{a}:role/{'deep/' * 60}{n}", accounts, names)
identities = st.one_of(tenants, iam_arns, anything, very_long)


@settings(max_examples=400, deadline=None)
@given(identities, identities)
def test_two_distinct_identities_never_share_a_prefix(one, other):
    if one == other:
        return
    assert safe_caller(one) != safe_caller(other)
    for top in TOPS:
        mine, theirs = caller_prefix(top, one), caller_prefix(top, other)
        assert not theirs.startswith(mine)
        assert not mine.startswith(theirs)


@st.composite
def look_alike_pairs(draw):
    """An identity and a near twin: one separator swapped for another, the collisions a lossy mapping makes."""
    identity = draw(st.one_of(iam_arns, tenants, anything))
    spots = [i for i, char in enumerate(identity) if char in "/:_.-@+= "]
    if not spots:
        identity, spots = identity + "/x", [len(identity)]
    spot = draw(st.sampled_from(spots))
    swap = draw(st.sampled_from([c for c in "/:_.-@+= %~" if c != identity[spot]]))
    return identity, identity[:spot] + swap + identity[spot + 1 :]


@settings(max_examples=300, deadline=None)
@given(look_alike_pairs())
def test_identities_differing_in_one_separator_never_share_a_prefix(pair):
    one, other = pair
    for top in TOPS:
        assert caller_prefix(top, one) != caller_prefix(top, other)
        assert not caller_prefix(top, other).startswith(caller_prefix(top, one))


@settings(max_examples=400, deadline=None)
@given(identities)
def test_a_segment_is_one_safe_path_component_and_decodes_back(identity):
    segment = safe_caller(identity)

    assert SAFE_SEGMENT.match(segment), segment
    assert segment not in (".", "..")
    assert len(segment) <= MAX_SEGMENT_CHARS
    decoded = caller_of_segment(segment)
    if "__" in segment:  # the digest form of an identity too long to spell out
        assert decoded is None
    else:
        assert decoded == identity


@settings(max_examples=200, deadline=None)
@given(identities, st.sampled_from(TOPS))
def test_every_key_builder_puts_the_caller_under_its_own_prefix(identity, top):
    mine = caller_prefix(top, identity)

    assert upload_key(identity, "up-1").startswith(caller_prefix(UPLOADS_PREFIX, identity))
    assert async_input_key(identity, "job-1").startswith(caller_prefix(ASYNC_PREFIX, identity))
    assert batch_output_prefix(identity, "job-1").startswith(caller_prefix(BATCH_OUTPUT_PREFIX, identity))
    assert mine.count("/") == 2


def test_iam_users_a_slash_b_and_a_b_get_different_prefixes():
    slash = "arn:aws:iam::123456789012:user/a/b"
    underscore = "arn:aws:iam::123456789012:user/a_b"

    assert safe_caller(slash) == "arn_3aaws_3aiam_3a_3a123456789012_3auser_2fa_2fb"
    assert safe_caller(underscore) == "arn_3aaws_3aiam_3a_3a123456789012_3auser_2fa_5fb"


@pytest.mark.parametrize("tenant", ["acme", "platform", "local", "team-risk", "v1.2"])
def test_plain_tenant_names_keep_their_readable_prefix(tenant):
    assert safe_caller(tenant) == tenant
    assert upload_key(tenant, "up-1") == f"uploads/{tenant}/up-1"


def test_a_segment_spelled_in_another_way_is_not_decoded():
    # "_61" is "a" escaped, which safe_caller never writes: only one spelling per identity.
    assert caller_of_segment("_61cme") is None
    assert caller_of_segment("a_zz") is None
    assert caller_of_segment("a*") is None


def test_an_empty_identity_has_no_segment():
    with pytest.raises(ValueError, match="never empty"):
        safe_caller("")
