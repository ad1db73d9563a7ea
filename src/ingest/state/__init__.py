"""Durable state shared by every mode: idempotency keys, watermarks, dead letters, manifests."""
