"""Landing: Arrow batches into PostgreSQL landing tables, merged on the primary key."""
