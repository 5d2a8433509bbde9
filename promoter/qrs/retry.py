"""How often and how patiently the QRS client repeats a call that failed for a passing reason."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient QRS failures (no answer, or a 5xx).

    ``attempts`` counts the first try, so 1 means "never repeat". Tests pass zero delays; the
    delays are a policy, never a patched sleep.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative delays")

    def delay(self, retry: int) -> float:
        """Seconds to wait before repeat number ``retry`` (1 for the first repeat).

        Half of the exponential step is fixed and half random ("equal jitter"): the wait keeps
        growing, yet several promotions hitting a restarting site do not come back in lockstep.
        """
        step = min(self.max_delay, self.base_delay * 2 ** max(retry - 1, 0))
        return step / 2 + random.uniform(0, step / 2)

    @classmethod
    def immediate(cls, attempts: int = 3) -> RetryPolicy:
        """Repeat without waiting: for tests and the sandbox."""
        return cls(attempts=attempts, base_delay=0.0, max_delay=0.0)
