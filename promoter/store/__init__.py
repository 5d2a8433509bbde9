"""What qs-promoter remembers between runs, in one database (the ledger URL).

``database`` opens it (engine, SQLite pragmas, the one schema, migrations); each other module is
one store over its own tables: ``ledger`` (changes handled, promotions, emails, uploads,
rollbacks, lineage), ``reconcile_marks`` (how far reconcile has looked, retries it made) and
``subscriptions`` (the QRS notification handles we hold). The webhook's outbox is a separate
SQLite file (``promoter.webhook.outbox``): its one writer thread must never wait for a
promotion's transaction, and it flushes every commit to disk (``synchronous=FULL``) before the
webhook answers QRS.
"""
