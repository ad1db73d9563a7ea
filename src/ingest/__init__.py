"""A fault-tolerant ingestion service — and the workbook that builds it.

Modules:

- `ingest.checkpoint`: Checkpoint cells: export one notebook into the package, then run the tests of what it exported.
- `ingest.datagen.orders`: Deterministic "orders" records for the S3 drops, generated in column chunks.
- `ingest.datagen.s3`: S3 batch drops: data files laid out under the keys they get in a bucket, plus the truth.
- `ingest.datagen.saas`: A small SaaS export: Stripe list-customers pages and a Salesforce Bulk API 2.0 query result.
- `ingest.datagen.webhooks`: Webhook deliveries, unsigned: what a receiver would be sent, in delivery order.
- `ingest.demo.rest`: Step 1: a paginated REST source through the mock API with faults on, by ``ingest run``'s runner.
- `ingest.demo.s3`: Step 2: the committed sample drops into a bucket, then into PostgreSQL by ``ingest run``'s loader.
- `ingest.demo.summary`: What the demo reports: one line per source, counted from the tables, and the summary table.
- `ingest.demo.webhooks`: Step 3: the sample webhook deliveries, signed by the vendors' SDKs, into the real receiver.
- `ingest.errors`: One exception tree for the whole package.
- `ingest.metrics_app`: ``ingest serve metrics``: a Prometheus exporter for the stack and the load log (wiring).
- `ingest.mockapi.admin`: Control routes under ``/_admin``: configure a run, reset it, read its counters and log.
- `ingest.mockapi.app`: The mock API application factory.
- `ingest.mockapi.config`: Configuration of one mock-API run: dataset, fault injection and the server-side rate limit.
- `ingest.mockapi.errors`: One JSON error shape for every non-2xx answer the mock API gives on purpose.
- `ingest.mockapi.faults`: Deterministic fault decisions and the canned answers of the status-code faults.
- `ingest.mockapi.fixtures`: Deterministic REST fixtures: the same seed and count give the same records, byte for byte.
- `ingest.mockapi.middleware`: The ASGI layer that counts, rate-limits and breaks data requests before the routes see them.
- `ingest.mockapi.pagination`: The fixture dataset and the slicing behind every pagination style, free of HTTP.
- `ingest.mockapi.ratelimit`: Server-side rate limit: token buckets, one per client id or one for everybody.
- `ingest.mockapi.rest`: Generic REST routes: one endpoint per pagination style, all over the same fixture records.
- `ingest.mockapi.state`: Per-run state: the dataset, fault planner, rate limiter, per-client counters and request log.
- `ingest.settings`: Settings, read from ``INGEST_*`` environment variables and ``.ingest/stack.env``.
- `ingest.sources.spec`: Source specifications: the YAML a platform engineer writes to add a source.
- `ingest.stack`: The local stack: real services, started from wheels when nobody gave us one.
- `ingest.state.db`: Connections to the state database, scoped to one schema.
- `ingest.state.migrate`: Apply the numbered SQL migrations in ``migrations/`` to one schema, idempotently.
- `ingest.webhooks.app`: The webhook receiver's app factory (wiring)."""

__version__ = "0.1.0"
