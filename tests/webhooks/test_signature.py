"""Webhook signature schemes: published vectors, the official SDKs, every rejection reason, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import stripe
from hypothesis import given
from hypothesis import strategies as st

from ingest.errors import ConfigError, Terminal
from ingest.webhooks.signature import (
    BAD_SIGNATURE,
    MALFORMED_HEADER,
    MISSING_SIGNATURE,
    SCHEMES,
    TIMESTAMP_OUTSIDE_TOLERANCE,
    HmacSha256Scheme,
    SignatureError,
    SignatureScheme,
    StandardWebhooksScheme,
    StripeScheme,
    create_scheme,
    parse_standard_signatures,
    parse_stripe_header,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "webhook-vectors.json").read_text("utf-8")
)
STRIPE_VECTORS = VECTORS["stripe"]["vectors"]
SW_PUBLISHED = VECTORS["standard_webhooks"]["published"]
SW_BEHAVIOURAL = {v["id"]: v for v in VECTORS["standard_webhooks"]["behavioural"]}

T = 1_700_000_000
NOW = datetime.fromtimestamp(T + 10, UTC)
BODY = b'{"id": "evt_123", "object": "event", "data": {"object": {"id": "cus_1"}}}'
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_OTHER = "whsec_" + base64.b64encode(b"another-secret-of-24-bytes!!").decode()


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def reason_of(
    scheme: SignatureScheme, headers: Mapping[str, str], body: bytes, now: datetime = NOW
) -> str | None:
    """None when accepted, else the SignatureError's reason."""
    try:
        scheme.verify(headers, body, now=now)
    except SignatureError as exc:
        return exc.reason
    return None


# --- vectors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", STRIPE_VECTORS, ids=lambda v: v["id"])
def test_stripe_vectors(vector: dict[str, Any]) -> None:
    scheme = StripeScheme([vector["secret"]], tolerance_seconds=vector["tolerance"])
    headers = {"Stripe-Signature": vector["header"]}
    reason = reason_of(scheme, headers, vector["payload"].encode(), at(vector["verify_at_unix"]))
    if vector["expected"] == "accept":
        assert reason is None
    else:
        assert reason == vector["expected_reason"]


def test_stripe_rolling_vector_accepts_the_old_secret_too() -> None:
    vector = next(v for v in STRIPE_VECTORS if v["id"] == "stripe-2-rolling")
    scheme = StripeScheme(["whsec_old_secret"])
    headers = {"Stripe-Signature": vector["header"]}
    assert (
        reason_of(scheme, headers, vector["payload"].encode(), at(vector["verify_at_unix"])) is None
    )


def test_stripe_vector_expected_v1_is_what_we_sign() -> None:
    vector = STRIPE_VECTORS[0]
    signed = StripeScheme([vector["secret"]]).sign(
        vector["payload"].encode(), timestamp=vector["timestamp"]
    )
    assert signed == {"Stripe-Signature": vector["header"]}


@pytest.mark.parametrize("vector", SW_PUBLISHED, ids=lambda v: v["id"])
def test_standard_webhooks_published_vectors(vector: dict[str, Any]) -> None:
    scheme = StandardWebhooksScheme([vector["secret"]])
    headers = {
        "webhook-id": vector["msg_id"],
        "webhook-timestamp": str(vector["timestamp"]),
        "webhook-signature": vector["expected_signature"],
    }
    body = vector["payload"].encode()
    assert reason_of(scheme, headers, body, at(vector["timestamp"])) is None
    assert scheme.sign(body, msg_id=vector["msg_id"], timestamp=vector["timestamp"]) == headers


def test_standard_webhooks_negative_vector() -> None:
    vector = SW_BEHAVIOURAL["sw-neg-1"]
    published = SW_PUBLISHED[0]
    headers = {
        "webhook-id": vector["msg_id"],
        "webhook-timestamp": str(published["timestamp"]),
        "webhook-signature": vector["webhook-signature"],
    }
    scheme = StandardWebhooksScheme([vector["secret"]])
    reason = reason_of(scheme, headers, vector["payload"].encode(), at(published["timestamp"]))
    assert reason == vector["expected_reason"]


def test_standard_webhooks_multi_signature_vector() -> None:
    vector = SW_BEHAVIOURAL["sw-multi-1"]
    published = SW_PUBLISHED[0]
    header = vector["header_template"].replace("<valid v1 sig>", published["expected_signature"])
    headers = {
        "webhook-id": published["msg_id"],
        "webhook-timestamp": str(published["timestamp"]),
        "webhook-signature": header,
    }
    scheme = StandardWebhooksScheme([vector["secret"]])
    assert (
        reason_of(scheme, headers, published["payload"].encode(), at(published["timestamp"]))
        is None
    )
    without_valid = header.replace(published["expected_signature"], "")
    headers["webhook-signature"] = without_valid
    reason = reason_of(scheme, headers, published["payload"].encode(), at(published["timestamp"]))
    assert reason == BAD_SIGNATURE


# --- interoperability with the official libraries ------------------------------------------------


def test_stripe_sdk_signed_headers_verify_with_ours() -> None:
    payload = BODY.decode()
    header = stripe.WebhookSignature.generate_signature_header(payload, "whsec_abc", timestamp=T)
    assert reason_of(StripeScheme(["whsec_abc"]), {"Stripe-Signature": header}, BODY) is None
    assert (
        reason_of(StripeScheme(["whsec_xyz"]), {"Stripe-Signature": header}, BODY) == BAD_SIGNATURE
    )


def test_our_stripe_headers_verify_with_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: float(T + 10))
    header = StripeScheme(["whsec_abc"]).sign(BODY, timestamp=T)["Stripe-Signature"]
    event = stripe.Webhook.construct_event(BODY.decode(), header, "whsec_abc")
    assert event["id"] == "evt_123"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(BODY.decode(), header, "whsec_other")


def test_stripe_event_id_is_the_body_id() -> None:
    scheme = StripeScheme(["whsec_abc"])
    assert scheme.event_id({}, BODY) == "evt_123"
    assert scheme.event_id({}, b"not json") is None
    assert scheme.event_id({}, b"[1, 2]") is None
    assert scheme.event_id({}, b'{"id": 5}') is None


def test_standardwebhooks_library_signed_headers_verify_with_ours() -> None:
    reference = standardwebhooks.Webhook(SW_SECRET)
    signature = reference.sign("msg_1", at(T), BODY.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(T), "webhook-signature": signature}
    scheme = StandardWebhooksScheme([SW_SECRET])
    assert reason_of(scheme, headers, BODY) is None
    assert scheme.event_id(headers, BODY) == "msg_1"
    assert reason_of(StandardWebhooksScheme([SW_OTHER]), headers, BODY) == BAD_SIGNATURE


def test_our_standard_webhooks_headers_verify_with_the_library() -> None:
    # The library checks the timestamp against the real clock, so sign for "now".
    timestamp = int(time.time())
    headers = StandardWebhooksScheme([SW_SECRET]).sign(BODY, msg_id="msg_2", timestamp=timestamp)
    assert standardwebhooks.Webhook(SW_SECRET).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SW_OTHER).verify(BODY, headers)


def test_standard_webhooks_headers_are_case_insensitive() -> None:
    headers = StandardWebhooksScheme([SW_SECRET]).sign(BODY, msg_id="msg_3", timestamp=T)
    upper = {key.title(): value for key, value in headers.items()}
    assert reason_of(StandardWebhooksScheme([SW_SECRET]), upper, BODY) is None


# --- rejections ----------------------------------------------------------------------------------

STRIPE = StripeScheme(["whsec_abc"])
STRIPE_HEADERS = STRIPE.sign(BODY, timestamp=T)
SW = StandardWebhooksScheme([SW_SECRET])
SW_HEADERS = SW.sign(BODY, msg_id="msg_1", timestamp=T)


@pytest.mark.parametrize(
    ("headers", "body", "now", "expected"),
    [
        (STRIPE_HEADERS, BODY, NOW, None),
        (STRIPE_HEADERS, BODY.replace(b"cus_1", b"cus_2"), NOW, BAD_SIGNATURE),
        (STRIPE_HEADERS, BODY, at(T + 301), TIMESTAMP_OUTSIDE_TOLERANCE),
        (STRIPE_HEADERS, BODY, at(T + 300), None),
        (STRIPE_HEADERS, BODY, at(T - 301), TIMESTAMP_OUTSIDE_TOLERANCE),
        (StripeScheme(["whsec_other"]).sign(BODY, timestamp=T), BODY, NOW, BAD_SIGNATURE),
        ({"Stripe-Signature": f"t={T},v1={'0' * 64}"}, BODY, NOW, BAD_SIGNATURE),
        (
            {"Stripe-Signature": f"t={T + 1},v1=" + STRIPE_HEADERS["Stripe-Signature"][-64:]},
            BODY,
            NOW,
            BAD_SIGNATURE,
        ),
        ({}, BODY, NOW, MISSING_SIGNATURE),
        ({"Stripe-Signature": ""}, BODY, NOW, MISSING_SIGNATURE),
        ({"Stripe-Signature": "  "}, BODY, NOW, MISSING_SIGNATURE),
        ({"Stripe-Signature": f"t={T}"}, BODY, NOW, MISSING_SIGNATURE),
        ({"Stripe-Signature": "v1=" + "0" * 64}, BODY, NOW, MALFORMED_HEADER),
        ({"Stripe-Signature": "t=abc,v1=" + "0" * 64}, BODY, NOW, MALFORMED_HEADER),
        ({"Stripe-Signature": "t=+1700000000,v1=" + "0" * 64}, BODY, NOW, MALFORMED_HEADER),
        ({"Stripe-Signature": "garbage"}, BODY, NOW, MALFORMED_HEADER),
    ],
    ids=[
        "genuine",
        "tampered-body",
        "stale",
        "at-tolerance",
        "future",
        "wrong-secret",
        "forged",
        "timestamp-changed",
        "no-header",
        "empty-header",
        "blank-header",
        "no-v1",
        "no-timestamp",
        "non-numeric-timestamp",
        "signed-timestamp",
        "garbage",
    ],
)
def test_stripe_rejections(
    headers: dict[str, str], body: bytes, now: datetime, expected: str | None
) -> None:
    assert reason_of(STRIPE, headers, body, now) == expected


def test_non_ascii_signatures_are_bad_not_crashes() -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str; we compare bytes.
    assert reason_of(STRIPE, {"Stripe-Signature": f"t={T},v1=é٣"}, BODY) == BAD_SIGNATURE
    assert reason_of(SW, _sw(webhook_signature="v1,é٣"), BODY) == MISSING_SIGNATURE


def test_stale_forgery_is_a_bad_signature_not_a_timestamp_problem() -> None:
    # Signatures are checked first: only authentic deliveries learn about the clock.
    forged = {"Stripe-Signature": f"t={T},v1={'0' * 64}"}
    assert reason_of(STRIPE, forged, BODY, at(T + 10_000)) == BAD_SIGNATURE


def _sw(**changes: str | None) -> dict[str, str]:
    headers = dict(SW_HEADERS)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    return headers


@pytest.mark.parametrize(
    ("headers", "body", "now", "expected"),
    [
        (_sw(), BODY, NOW, None),
        (_sw(), BODY + b" ", NOW, BAD_SIGNATURE),
        (_sw(), BODY, at(T + 301), TIMESTAMP_OUTSIDE_TOLERANCE),
        (_sw(), BODY, at(T - 301), TIMESTAMP_OUTSIDE_TOLERANCE),
        (
            StandardWebhooksScheme([SW_OTHER]).sign(BODY, msg_id="msg_1", timestamp=T),
            BODY,
            NOW,
            BAD_SIGNATURE,
        ),
        (_sw(webhook_id="msg_other"), BODY, NOW, BAD_SIGNATURE),
        (_sw(webhook_timestamp=str(T + 1)), BODY, NOW, BAD_SIGNATURE),
        (
            _sw(webhook_signature="v1," + base64.b64encode(b"x" * 32).decode()),
            BODY,
            NOW,
            BAD_SIGNATURE,
        ),
        (_sw(webhook_signature="v1,!!!not-base64"), BODY, NOW, MISSING_SIGNATURE),
        (_sw(webhook_signature=None), BODY, NOW, MISSING_SIGNATURE),
        (_sw(webhook_signature=""), BODY, NOW, MISSING_SIGNATURE),
        (
            _sw(webhook_signature="v1a," + SW_HEADERS["webhook-signature"][3:]),
            BODY,
            NOW,
            MISSING_SIGNATURE,
        ),
        (
            _sw(webhook_signature=SW_HEADERS["webhook-signature"].replace(",", "")),
            BODY,
            NOW,
            MALFORMED_HEADER,
        ),
        (_sw(webhook_id=None), BODY, NOW, MALFORMED_HEADER),
        (_sw(webhook_id="msg.1"), BODY, NOW, MALFORMED_HEADER),
        (_sw(webhook_timestamp=None), BODY, NOW, MALFORMED_HEADER),
        (_sw(webhook_timestamp="soon"), BODY, NOW, MALFORMED_HEADER),
    ],
    ids=[
        "genuine",
        "tampered-body",
        "stale",
        "future",
        "wrong-secret",
        "id-changed",
        "timestamp-changed",
        "forged",
        "undecodable",
        "no-signature",
        "empty-signature",
        "only-v1a",
        "entry-without-comma",
        "no-id",
        "dot-in-id",
        "no-timestamp",
        "non-numeric-timestamp",
    ],
)
def test_standard_webhooks_rejections(
    headers: dict[str, str], body: bytes, now: datetime, expected: str | None
) -> None:
    assert reason_of(SW, headers, body, now) == expected


def test_signature_error_is_terminal_and_says_nothing_useful_to_a_forger() -> None:
    forged = {"Stripe-Signature": f"t={T},v1={'0' * 64}"}
    with pytest.raises(SignatureError) as info:
        STRIPE.verify(forged, BODY, now=NOW)
    assert isinstance(info.value, Terminal)
    assert str(info.value) == BAD_SIGNATURE
    assert STRIPE_HEADERS["Stripe-Signature"][-64:] not in str(info.value)
    assert "whsec_abc" not in repr(STRIPE)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone"):
        STRIPE.verify(STRIPE_HEADERS, BODY, now=datetime(2023, 11, 14, 22, 13, 30))


# --- generic HMAC-SHA256 -------------------------------------------------------------------------


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_style_hex_with_prefix() -> None:
    # GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature("It's a Secret to Everybody", body) == expected
    scheme = HmacSha256Scheme(
        ["It's a Secret to Everybody"], header="X-Hub-Signature-256", prefix="sha256="
    )
    assert scheme.sign(body) == {"X-Hub-Signature-256": expected}
    assert reason_of(scheme, {"x-hub-signature-256": expected}, body) is None
    assert reason_of(scheme, {"X-Hub-Signature-256": expected}, body + b"!") == BAD_SIGNATURE
    assert reason_of(scheme, {"X-Hub-Signature-256": expected[7:]}, body) == MALFORMED_HEADER
    assert reason_of(scheme, {"X-Hub-Signature-256": "sha256=zz"}, body) == MALFORMED_HEADER
    assert reason_of(scheme, {}, body) == MISSING_SIGNATURE


def test_shopify_style_base64() -> None:
    body = b'{"id": 820982911946154508}'
    digest = hmac.new(b"shpss_x", body, hashlib.sha256).digest()
    header = base64.b64encode(digest).decode()
    scheme = HmacSha256Scheme(["shpss_x"], header="X-Shopify-Hmac-Sha256", encoding="base64")
    assert reason_of(scheme, {"X-Shopify-Hmac-Sha256": header}, body) is None
    assert reason_of(scheme, {"X-Shopify-Hmac-Sha256": digest.hex()}, body) in {
        BAD_SIGNATURE,
        MALFORMED_HEADER,
    }
    assert reason_of(scheme, {"X-Shopify-Hmac-Sha256": "@@@"}, body) == MALFORMED_HEADER


def test_hmac_with_timestamp_header() -> None:
    scheme = HmacSha256Scheme(["s3cret"], header="X-Sig", timestamp_header="X-Ts")
    headers = scheme.sign(BODY, timestamp=T)
    expected = hmac.new(b"s3cret", f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers == {"X-Sig": expected, "X-Ts": str(T)}
    assert reason_of(scheme, headers, BODY) is None
    assert reason_of(scheme, headers, BODY, at(T + 301)) == TIMESTAMP_OUTSIDE_TOLERANCE
    assert reason_of(scheme, headers, BODY, at(T - 301)) == TIMESTAMP_OUTSIDE_TOLERANCE
    assert reason_of(scheme, headers | {"X-Ts": str(T + 1)}, BODY) == BAD_SIGNATURE
    assert reason_of(scheme, {"X-Sig": expected}, BODY) == MALFORMED_HEADER


def test_hmac_event_id_sources() -> None:
    by_header = HmacSha256Scheme(["s"], header="X-Sig", event_id_header="X-GitHub-Delivery")
    assert by_header.event_id({"x-github-delivery": "d-1"}, BODY) == "d-1"
    by_pointer = HmacSha256Scheme(["s"], header="X-Sig", event_id_pointer="/data/object/id")
    assert by_pointer.event_id({}, BODY) == "cus_1"
    numeric = HmacSha256Scheme(["s"], header="X-Sig", event_id_pointer="/n")
    assert numeric.event_id({}, b'{"n": 42}') == "42"
    fallback = "sha256:" + hashlib.sha256(BODY).hexdigest()
    assert by_header.event_id({}, BODY) == fallback
    assert (
        by_pointer.event_id({}, b"not json") == "sha256:" + hashlib.sha256(b"not json").hexdigest()
    )
    assert HmacSha256Scheme(["s"], header="X-Sig").event_id({}, BODY) == fallback
    escaped = HmacSha256Scheme(["s"], header="X-Sig", event_id_pointer="/a~1b/0")
    assert escaped.event_id({}, b'{"a/b": ["x"]}') == "x"


# --- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "sign"),
    [
        (StripeScheme, lambda s, b: s.sign(b, timestamp=T)),
        (StandardWebhooksScheme, lambda s, b: s.sign(b, msg_id="msg_r", timestamp=T)),
        (lambda secrets: HmacSha256Scheme(secrets, header="X-Sig"), lambda s, b: s.sign(b)),
    ],
    ids=["stripe", "standard-webhooks", "hmac-sha256"],
)
def test_rotation(make: Any, sign: Any) -> None:
    old, new = "whsec_" + base64.b64encode(b"old" * 8).decode(), SW_SECRET
    signed_old = sign(make([old]), BODY)
    signed_new = sign(make([new]), BODY)
    during = make([new, old])
    assert reason_of(during, signed_old, BODY) is None
    assert reason_of(during, signed_new, BODY) is None
    after = make([new])
    assert reason_of(after, signed_old, BODY) == BAD_SIGNATURE
    assert reason_of(after, signed_new, BODY) is None


def test_stripe_signs_with_every_active_secret_while_rolling() -> None:
    header = StripeScheme(["whsec_new", "whsec_old"]).sign(BODY, timestamp=T)["Stripe-Signature"]
    assert header.count("v1=") == 2
    assert reason_of(StripeScheme(["whsec_old"]), {"Stripe-Signature": header}, BODY) is None


# --- registry and configuration ------------------------------------------------------------------


def test_registry_builds_each_scheme() -> None:
    assert set(SCHEMES) == {"stripe", "standard-webhooks", "hmac-sha256"}
    assert isinstance(create_scheme("stripe", secrets=["whsec_a"]), StripeScheme)
    assert isinstance(
        create_scheme("standard-webhooks", secrets=[SW_SECRET]), StandardWebhooksScheme
    )
    scheme = create_scheme("hmac-sha256", secrets=["a"], header="X-Sig", encoding="base64")
    assert isinstance(scheme, HmacSha256Scheme)


def test_unknown_scheme_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        create_scheme("github", secrets=["a"])
    for name in SCHEMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("stripe", {"secrets": []}),
        ("stripe", {"secrets": [""]}),
        ("stripe", {"secrets": ["a"], "tolerance_seconds": 0}),
        ("stripe", {"secrets": ["a"], "bogus": 1}),
        ("standard-webhooks", {"secrets": ["whsec_not base64!"]}),
        ("hmac-sha256", {"secrets": ["a"]}),
        ("hmac-sha256", {"secrets": ["a"], "header": "X", "encoding": "base32"}),
        ("hmac-sha256", {"secrets": ["a"], "header": "X", "event_id_pointer": "id"}),
    ],
)
def test_invalid_configuration(name: str, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        create_scheme(name, **config)
    assert "not base64!" not in str(info.value)


# --- property tests: the parsers raise nothing but SignatureError --------------------------------

_chars = st.sampled_from([*"tv01=, .+-_/ab9", "\x00", "é", "٣", "\t"]) | st.characters()
_items = st.tuples(
    st.sampled_from(["t", "v1", "v0", "v1a", "", " t"]),
    st.sampled_from(["=", ",", ""]),
    st.text(alphabet=_chars, max_size=12) | st.integers(-5, 10**20).map(str),
).map("".join)
header_text = st.text(alphabet=_chars, max_size=80) | st.lists(_items, max_size=5).flatmap(
    lambda items: st.sampled_from([",".join(items), " ".join(items)])
)


@given(header_text)
def test_stripe_parser_raises_only_signature_errors(value: str) -> None:
    try:
        timestamp, signatures = parse_stripe_header(value)
    except SignatureError as exc:
        assert exc.reason in {MALFORMED_HEADER, MISSING_SIGNATURE}
    else:
        assert timestamp >= 0
        assert signatures


@given(header_text)
def test_standard_parser_raises_only_signature_errors(value: str) -> None:
    try:
        assert parse_standard_signatures(value)
    except SignatureError as exc:
        assert exc.reason in {MALFORMED_HEADER, MISSING_SIGNATURE}


@given(header_text, header_text, header_text, st.binary(max_size=40))
def test_verify_raises_only_signature_errors(
    signature: str, msg_id: str, timestamp: str, body: bytes
) -> None:
    headers = {
        "Stripe-Signature": signature,
        "webhook-signature": signature,
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "X-Sig": signature,
        "X-Ts": timestamp,
    }
    schemes: list[SignatureScheme] = [
        STRIPE,
        SW,
        HmacSha256Scheme(["a"], header="X-Sig", timestamp_header="X-Ts"),
        HmacSha256Scheme(["a"], header="X-Sig", encoding="base64", prefix="sha256="),
    ]
    for scheme in schemes:
        reason = reason_of(scheme, headers, body)
        assert reason in {None, MALFORMED_HEADER, MISSING_SIGNATURE, BAD_SIGNATURE}
        assert isinstance(scheme.event_id(headers, body), str | None)
