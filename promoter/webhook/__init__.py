"""The webhook that receives QRS change notifications and turns them into Prefect flow runs.

``app.create_app`` builds the FastAPI application and ``serving.serve`` runs it behind a guard
against slow and noisy senders; ``callbacks.callback_url`` is the URL a subscription registers;
``outbox`` keeps notifications durable; ``submitter`` drains them.
"""
