"""Talking to the Qlik Repository Service (QRS) of one site: models, filters, TLS, the client."""
