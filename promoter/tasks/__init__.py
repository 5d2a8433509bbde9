"""Prefect tasks: one unit of I/O each, with retries, timeouts and persisted results."""
