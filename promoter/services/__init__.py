"""The services `qs-promoter up` runs: the Prefect server, the work pool and its deployments, the
executor and the webhook, and the Prefect calls the stack makes for them. (The top-level
`deployments/` folder holds the service files for systemd and Windows that run the same.)"""
