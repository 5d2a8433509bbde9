"""Tests of the webhook: intake route, outbox, submitter, health, CLI."""
