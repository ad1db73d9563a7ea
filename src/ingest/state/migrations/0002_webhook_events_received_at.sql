-- The receiver refills its bloom filter at start-up from the events of the dedup window
-- (`received_at` within the last few days): an index range scan instead of reading the whole inbox.
CREATE INDEX webhook_events_received_at ON webhook_events (received_at);
