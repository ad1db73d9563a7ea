"""Signed webhooks: signature schemes, dedup, inbox/outbox and the FastAPI receiver."""
