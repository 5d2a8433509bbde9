"""Serving the flows: the stack `qs-promoter up` runs (Prefect server, work pool, deployments,
workers, webhook), the child processes it starts, the Prefect calls it makes, and the demo."""
