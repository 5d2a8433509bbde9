"""Refused connections and requests, logged as one summary line per interval instead of one line each.

A noisy sender (a scanner, a wrong secret in a script, a flood of slow connections) must not fill
the log or slow the webhook with logging. The first refusal after a quiet interval is logged at
once, so an admin sees the first sign of trouble; the rest are counted by reason and summed up
in one line when the interval ends. Reasons are our own fixed words and sources are IP addresses:
nothing a sender typed reaches the log from here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

log = logging.getLogger("promoter.webhook")

DEFAULT_INTERVAL_SECONDS = 60.0


class RefusalLog:
    """Counts refusals by reason; call it from the event loop that serves the webhook."""

    def __init__(self, interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self._counts: Counter[str] = Counter()
        self._last_source: dict[str, str] = {}
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, reason: str, source: str | None) -> None:
        """One refusal of a connection or request from ``source`` (an IP address), for ``reason``."""
        source = source or "an unknown address"
        if self._timer is None:
            log.warning(
                "refused %s: %s (further refusals are summed up every %g s)",
                source,
                reason,
                self.interval_seconds,
            )
            self._timer = asyncio.get_running_loop().call_later(self.interval_seconds, self._summarise)
            return
        self._counts[reason] += 1
        self._last_source[reason] = source

    def flush(self) -> None:
        """Log what is counted and stop the timer (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._log_counts()

    def _summarise(self) -> None:
        self._timer = None
        if self._log_counts():
            # Still noisy: keep summing up. A quiet interval ends it, and the next refusal is shown at once.
            self._timer = asyncio.get_running_loop().call_later(self.interval_seconds, self._summarise)

    def _log_counts(self) -> bool:
        if not self._counts:
            return False
        total = sum(self._counts.values())
        details = "; ".join(
            f"{count} {reason} (last from {self._last_source[reason]})"
            for reason, count in self._counts.most_common()
        )
        log.warning("refused %d more (summed up every %g s): %s", total, self.interval_seconds, details)
        self._counts.clear()
        self._last_source.clear()
        return True
