"""Prefect flows: the stories of a promotion, a denial, a publish alert and a rollback."""
