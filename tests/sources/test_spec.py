"""Source YAML: validated whole, errors name the file and the field, secrets stay in the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.sources.spec import RestSourceSpec, load_sources, parse_duration

GOOD = """
name: customers
kind: rest
connection:
  base_url_env: INGEST_MOCK_API_URL
  path: /rest/cursor/customers
  params: {limit: 500}
auth: {type: bearer, token_env: CUSTOMERS_TOKEN}
pagination: {type: cursor, cursor_path: next_cursor, cursor_param: cursor}
data_selector: data
incremental: {cursor_field: updated_at, param: updated_since, lookback: 10m}
primary_key: [id]
rate_limit: {rate: 20, capacity: 5}
freshness_sla: 2h
"""


def test_a_good_source_loads(tmp_path: Path) -> None:
    (tmp_path / "customers.yaml").write_text(GOOD)
    specs = load_sources(tmp_path)
    spec = specs["customers"]
    assert isinstance(spec, RestSourceSpec)
    assert spec.incremental is not None and spec.incremental.lookback == timedelta(minutes=10)
    assert spec.freshness_sla == timedelta(hours=2)
    assert spec.table == "customers"
    assert spec.connection.resolved_base_url({"INGEST_MOCK_API_URL": "http://x"}) == "http://x"
    assert spec.auth.headers({"CUSTOMERS_TOKEN": "s3cr3t"}) == {"Authorization": "Bearer s3cr3t"}


def test_every_problem_is_reported_with_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.replace("primary_key: [id]", "primary_key: []"))
    (tmp_path / "b.yaml").write_text(
        "name: Bad-Name\nkind: rest\nconnection: {path: /x}\nprimary_key: [id]\nextra: 1\n"
    )
    (tmp_path / "c.yaml").write_text("name: s3thing\nkind: ftp\n")
    with pytest.raises(ConfigError) as info:
        load_sources(tmp_path)
    message = str(info.value)
    assert "a.yaml: source 'customers': primary_key" in message
    assert "b.yaml: source 'Bad-Name': name" in message
    assert "b.yaml: source 'Bad-Name': extra" in message
    assert "c.yaml: source 's3thing': unknown kind 'ftp' (known: rest, webhook, s3)" in message


def test_duplicate_names_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        "sources:\n  - {name: a, kind: rest, connection: {base_url: 'http://x'}, primary_key: [id]}\n"
        "  - {name: a, kind: rest, connection: {base_url: 'http://x'}, primary_key: [id]}\n"
    )
    with pytest.raises(ConfigError, match="'a' is defined twice"):
        load_sources(tmp_path)
    (tmp_path / "all.yaml").write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sources(tmp_path)


def test_missing_secret_is_a_config_error_naming_the_variable() -> None:
    spec = RestSourceSpec.model_validate(
        {
            "name": "x",
            "kind": "rest",
            "connection": {"base_url": "http://x"},
            "primary_key": ["id"],
            "auth": {"type": "api_key", "token_env": "X_KEY", "header": "X-Api-Key"},
        }
    )
    with pytest.raises(ConfigError, match=r"\$X_KEY is not set"):
        spec.auth.headers({})
    assert spec.auth.headers({"X_KEY": "s3cr3t-value"}) == {"X-Api-Key": "s3cr3t-value"}
    # The secret is read at use and never becomes part of the spec.
    assert "s3cr3t-value" not in spec.model_dump_json()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90),
        ("90", 90),
        ("1.5s", 1.5),
        ("15m", 900),
        ("2h", 7200),
        ("3d", 259200),
        ("250ms", 0.25),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_committed_example_sources_are_valid() -> None:
    specs = load_sources(Path(__file__).resolve().parents[2] / "sources")
    assert specs["customers"].kind == "rest"
    assert specs["payments"].kind == "webhook"


WEBHOOKS = """
sources:
  - name: stripe_events
    kind: webhook
    scheme: stripe
    secrets_env: STRIPE_WEBHOOK_SECRETS
  - name: github
    kind: webhook
    scheme: hmac-sha256
    secrets_env: GITHUB_WEBHOOK_SECRETS
    tolerance_seconds: 600
    signature: {header: X-Hub-Signature-256, encoding: hex, prefix: "sha256="}
    event_id: X-GitHub-Delivery
  - name: shop
    kind: webhook
    scheme: hmac-sha256
    secrets_env: SHOP_SECRETS
    signature: {header: X-Shopify-Hmac-Sha256, encoding: base64}
    event_id: /id
"""


def test_webhook_sources_load_and_build_their_schemes_from_the_environment(
    tmp_path: Path,
) -> None:
    from ingest.sources.spec import WebhookSourceSpec
    from ingest.webhooks.signature import HmacSha256Scheme, StripeScheme

    (tmp_path / "hooks.yaml").write_text(WEBHOOKS)
    specs = load_sources(tmp_path)
    stripe, github, shop = specs["stripe_events"], specs["github"], specs["shop"]
    assert isinstance(stripe, WebhookSourceSpec) and isinstance(github, WebhookSourceSpec)
    assert isinstance(shop, WebhookSourceSpec)
    assert stripe.tolerance_seconds == 300 and stripe.event_type_pointer == "/type"
    env = {
        "STRIPE_WEBHOOK_SECRETS": "whsec_new, whsec_old",
        "GITHUB_WEBHOOK_SECRETS": "gh",
        "SHOP_SECRETS": "s",
    }
    assert stripe.secrets(env) == ["whsec_new", "whsec_old"]  # newest first, blanks trimmed
    assert isinstance(stripe.create_scheme(env), StripeScheme)
    scheme = github.create_scheme(env)
    assert isinstance(scheme, HmacSha256Scheme)
    assert (scheme.header, scheme.prefix, scheme.tolerance_seconds) == (
        "X-Hub-Signature-256",
        "sha256=",
        600,
    )
    assert scheme.event_id_header == "X-GitHub-Delivery"
    shop_scheme = shop.create_scheme(env)
    assert isinstance(shop_scheme, HmacSha256Scheme)
    assert (shop_scheme.encoding, shop_scheme.event_id_pointer) == ("base64", "/id")
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRETS holds no secret"):
        stripe.secrets({"STRIPE_WEBHOOK_SECRETS": " , "})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("scheme: hmac-sha256", "needs `signature"),
        ("scheme: stripe\nevent_id: X-Id", "apply to hmac-sha256 only"),
        ("scheme: md5", "scheme"),
        ("scheme: stripe\ntolerance_seconds: 0", "tolerance_seconds"),
        ("scheme: stripe\nsecret: inline", "secret"),
    ],
)
def test_bad_webhook_sources_are_refused_with_the_field_named(
    tmp_path: Path, extra: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(
        f"name: hooks\nkind: webhook\nsecrets_env: HOOK_SECRETS\n{extra}\n"
    )
    with pytest.raises(ConfigError, match=message) as info:
        load_sources(tmp_path)
    assert "bad.yaml: source 'hooks'" in str(info.value)


def test_an_s3_source_loads_with_its_defaults(tmp_path: Path) -> None:
    from ingest.sources.spec import S3SourceSpec

    (tmp_path / "orders.yaml").write_text(
        "name: orders\nkind: s3\nbucket: partner-drops\nprefix: drops\n"
        "primary_key: [order_id]\noverdue_after: 2h\n"
    )
    spec = load_sources(tmp_path)["orders"]
    assert isinstance(spec, S3SourceSpec)
    assert (spec.bucket, spec.prefix, spec.table) == ("partner-drops", "drops/", "orders")
    assert spec.overdue_after == timedelta(hours=2)
    assert (spec.format, spec.max_bad_fraction, spec.endpoint_url_env) == (
        None,
        0.01,
        "INGEST_S3_ENDPOINT_URL",
    )
