"""The one exception family of the core: what failed, where, and what the other side answered."""

from __future__ import annotations


class PromoterError(Exception):
    """Base of every error qs-promoter raises on purpose.

    ``transient`` is the one answer every retry layer asks of our errors (the map of them is in
    promoter/tasks/retries.py): may the same work, done again later, succeed? False unless a
    subclass knows better: QrsError from QRS's answer, ExportInterrupted from whether the export
    started over, and MailError, VersioningError and SiteFailed from the cause judged where it was
    caught (passed as ``transient=``). Errors that are not ours (httpx, Prefect) have no such
    property; the code that meets them judges them itself (the webhook's submitter does).
    """

    _transient: bool = False  # set from ``transient=`` by the errors judged where they are caught

    @property
    def transient(self) -> bool:
        """True when repeating the same work later may succeed: the cause may pass."""
        return self._transient


class SettingsError(PromoterError):
    """The settings file or environment is invalid; the message names the file and field."""


class QrsError(PromoterError):
    """A QRS call failed: which site, which call, what QRS answered.

    The path never carries the query string (it holds the xrfkey and user input), and the
    body is cut to 200 characters so an error can never carry a whole app or a certificate.
    """

    def __init__(self, site: str, method: str, path: str, status: int | None, body: str = "") -> None:
        self.site = site
        self.method = method
        self.path = path.split("?", 1)[0]
        self.status = status
        self.body_excerpt = body[:200]
        super().__init__(f"{site}: {method} {self.path} -> {status or 'no response'}: {self.body_excerpt}")

    def __reduce__(self) -> tuple[type[QrsError], tuple[str, str, str, int | None, str]]:
        # Prefect pickles a failed task's exception; the default would call __init__(message).
        return type(self), (self.site, self.method, self.path, self.status, self.body_excerpt)

    @property
    def transient(self) -> bool:
        """True when repeating the same call later may succeed (no answer, or a 5xx)."""
        return self.status is None or self.status >= 500


class QrsBadRequest(QrsError):
    """400: the request itself is wrong (for example a filter QRS cannot parse)."""


class QrsRefused(QrsError):
    """401/403: the certificate, the user or the Xrfkey was not accepted."""


class QrsUntrusted(QrsError):
    """The site's certificate failed the check against root.pem (another CA, expired, another
    host name): a setting or a certificate to fix, so the call is not repeated."""

    @property
    def transient(self) -> bool:
        return False


class QrsNotFound(QrsError):
    """404: the entity does not exist (any more)."""


class QrsConflict(QrsError):
    """409: the entity changed since it was read; re-read modifiedDate and try again.

    Not transient: the same call would conflict again, so the client does not repeat it. A task
    retry is another matter, as the retried task reads the entity afresh (retry_if_transient).
    """


_BY_STATUS: dict[int, type[QrsError]] = {
    400: QrsBadRequest,
    401: QrsRefused,
    403: QrsRefused,
    404: QrsNotFound,
    409: QrsConflict,
}


def error_for_status(site: str, method: str, path: str, status: int, body: str) -> QrsError:
    """Map one failed QRS answer to the exception the caller can act on."""
    return _BY_STATUS.get(status, QrsError)(site, method, path, status, body)


class MailError(PromoterError):
    """Sending email failed: which server, which step, and why; never the password.

    ``transient`` is true when the same send may succeed later (no connection, a 4xx answer).
    """

    def __init__(self, server: str, step: str, reason: str, *, transient: bool = False) -> None:
        self.server = server
        self.step = step
        self.reason = reason
        self._transient = transient
        super().__init__(f"email via {server}: {step} failed: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect pickles a failed task's exception; the default rebuilds from the message alone.
        return (type(self), (self.server, self.step, self.reason), self.__dict__)


class VersioningError(PromoterError):
    """An S3 call for app versioning failed: which call, which object, what S3 answered; no keys.

    ``transient`` is true for throttling, 5xx answers and connection failures.
    """

    def __init__(
        self, operation: str, where: str, reason: str, *, code: str = "", transient: bool = False
    ) -> None:
        self.operation = operation
        self.where = where
        self.code = code
        self.reason = reason
        self._transient = transient
        super().__init__(f"S3 {operation} {where}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect pickles a failed task's exception; the default rebuilds from the message alone.
        return (type(self), (self.operation, self.where, self.reason), self.__dict__)


class IntakeError(PromoterError):
    """A change notification body is not what QRS sends: a JSON array of change objects."""


class SiteFailed(PromoterError):
    """One target site of a promotion failed; ``outcome`` (a promoter.outcome.SiteOutcome) says what
    stays placed there and why it failed. The other sites are not affected.

    ``transient`` is true when the failure's cause may pass (no answer, a 5xx, S3 throttling), so
    doing the whole site again later may succeed.
    """

    def __init__(self, outcome: object, *, transient: bool = False) -> None:
        self.outcome = outcome
        self._transient = transient
        problems = "; ".join(getattr(outcome, "problems", ()))
        super().__init__(f"{getattr(outcome, 'site', '?')}: {problems}")

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect pickles a failed task's exception; the default rebuilds from the message alone.
        return (type(self), (self.outcome,), self.__dict__)
