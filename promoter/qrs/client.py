"""QrsClient: the only code that speaks HTTP to a Qlik site's Repository Service (port 4242)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
import string
import time
from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, quote
from uuid import UUID, uuid4

import httpx
from pydantic import BaseModel

from promoter.errors import PromoterError, QrsBadRequest, QrsConflict, QrsError, QrsNotFound, QrsUntrusted
from promoter.qrs.filters import Scalar, all_of, eq, query_string
from promoter.qrs.models import (
    About,
    App,
    AppExportResponse,
    ChangeSince,
    ChangeType,
    CustomPropertyDefinition,
    HasCustomProperties,
    Stream,
    Tag,
    User,
    format_qrs_time,
    qrs_now,
)
from promoter.qrs.responses import (
    best_name_matches,
    check_response,
    download_location,
    read_model,
    read_models,
    redact,
    unwrap_value,
)
from promoter.qrs.retry import RetryPolicy
from promoter.qrs.tls import closed_connection_hint, site_tls
from promoter.qrs.transfer import Progress, UploadBody, file_size, land_stream, landing_at, save_stream
from promoter.settings import Settings, SiteSettings

__all__ = ["QrsClient", "RetryPolicy", "new_xrfkey", "not_our_upload", "qlik_user_header"]

log = logging.getLogger("promoter.qrs")

M = TypeVar("M", bound=BaseModel)

QVF_MEDIA_TYPE = "application/vnd.qlik.sense.app"
XRFKEY_ALPHABET = string.digits + string.ascii_letters
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
# An upload that failed on our side may still have created the app; QRS stamps createdDate
# with its own clock, which may lag ours by this much (more than NTP-synchronised servers drift).
UPLOAD_CLOCK_SKEW = timedelta(minutes=2)
_ENTITY = re.compile(r"^[A-Za-z]+$")


class _HideQrsQueries(logging.Filter):
    """httpx logs every request's full URL at INFO; a QRS query holds the xrfkey and app names."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) and b"xrfkey=" in arg.query else arg
                for arg in record.args
            )
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _HideQrsQueries) for f in _httpx_log.filters):
    _httpx_log.addFilter(_HideQrsQueries())


def new_xrfkey() -> str:
    """16 random characters from 0-9a-zA-Z, the only ones QRS allows; new for every request."""
    return "".join(secrets.choice(XRFKEY_ALPHABET) for _ in range(16))


def qlik_user_header(user_directory: str, user_id: str) -> str:
    """X-Qlik-User value; QRS wants both parts URL-encoded (UTF-8)."""
    return f"UserDirectory={quote(user_directory, safe='')}; UserId={quote(user_id, safe='')}"


def transport_failure(exc: httpx.HTTPError, cert_dir: Path | None = None) -> str:
    """An httpx failure in words an admin can act on (for QrsError's body; no status, no answer).

    A refused client certificate never says so: the site closes the connection, which TLS 1.3
    shows as "Server disconnected" or, when the close races the request, as a connection reset,
    and TLS 1.2 as an empty ConnectError over an SSL EOF. Those get the certificate hint; a failed
    server-certificate check already names its reason.
    """
    causes = list(_causes(exc))
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not str(exc):
        text += "".join(f": {cause}" for cause in causes[1:] if str(cause))[:120]
    if server_certificate_rejected(exc):
        return text
    unanswered = isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)
    if unanswered or any(isinstance(cause, ssl.SSLError | ConnectionResetError) for cause in causes):
        return f"{closed_connection_hint(cert_dir)} ({text})"
    return text


def server_certificate_rejected(exc: BaseException) -> bool:
    """True when our check of the site's certificate failed (not a network failure)."""
    return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def not_our_upload(app: App, *, uploader: str, since: datetime, size: int | None) -> str | None:
    """Why ``app`` cannot be the app that an upload as ``uploader`` made since ``since``; None if it can be.

    Anyone may give an app any name, so a name proves nothing: our upload is owned by the account we
    upload as (only an administrator can give an app to someone else), was created after the upload
    began (less UPLOAD_CLOCK_SKEW), and holds the ``size`` bytes we sent (None: QRS keeps fewer, as
    with keepdata=false).
    """
    if app.owner.account.casefold() != uploader.casefold():
        return f"it is owned by {app.owner.account!r}, not by {uploader!r}"
    if app.created_date is None or app.created_date < since - UPLOAD_CLOCK_SKEW:
        created = format_qrs_time(app.created_date) if app.created_date else "at an unknown time"
        return f"it was created {created}, before the upload began ({format_qrs_time(since)})"
    if size is not None and app.file_size != size:
        return f"it holds {app.file_size} bytes, the upload sent {size}"
    return None


def _entity_path(entity: str) -> str:
    if not _ENTITY.match(entity):
        raise ValueError(f"not a QRS entity type: {entity!r}")
    return entity.lower()


class QrsClient:
    """Calls to one site's QRS over mutual TLS, as ``async with QrsClient(...) as qrs:``.

    Every request carries a fresh Xrfkey and the configured X-Qlik-User. GET, PUT and DELETE are
    repeated with backoff on transport errors and 5xx; POSTs are not blindly repeated (see
    ``upload_app`` and ``export_app`` for the two that are made safe to repeat).
    """

    def __init__(
        self,
        site: SiteSettings,
        cert_dir: Path,
        *,
        name: str,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.site = site
        self.name = name
        self.retry = retry or RetryPolicy()
        self._cert_dir = cert_dir
        if transport is None:
            # A caller-supplied transport (unit tests) owns TLS itself; ours verifies root.pem.
            transport = httpx.AsyncHTTPTransport(
                verify=site_tls(cert_dir, verify=site.verify_tls, site=name),
                limits=httpx.Limits(
                    max_connections=site.max_connections, max_keepalive_connections=site.max_connections
                ),
            )
        self._transfer_timeout = httpx.Timeout(
            site.timeout_seconds, read=site.transfer_timeout_seconds, write=site.transfer_timeout_seconds
        )
        self._http = httpx.AsyncClient(
            base_url=site.base_url,
            transport=transport,
            timeout=httpx.Timeout(site.timeout_seconds),
            headers={
                "X-Qlik-User": qlik_user_header(site.user_directory, site.user_id),
                "Accept": "application/json",
            },
            # Port 4242 lives in the trusted zone: an HTTPS_PROXY meant for the internet must not
            # carry our administrator certificate's traffic, and redirects are never expected.
            trust_env=False,
            follow_redirects=False,
        )

    @classmethod
    def for_site(cls, settings: Settings, name: str, **kw: Any) -> QrsClient:
        """The client for ``"source"`` or a target alias, with that site's certificate folder."""
        return cls(settings.site(name), settings.cert_dir(name), name=name, **kw)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def account(self) -> str:
        """DIRECTORY\\userid of the X-Qlik-User the calls run as: the owner of what we upload and copy."""
        return f"{self.site.user_directory}\\{self.site.user_id}"

    # -- the one seam to httpx ---------------------------------------------------------------

    @contextmanager
    def _translated(self, method: str, path: str, *hidden: str) -> Iterator[None]:
        """The one place where httpx errors become QrsError (no answer: status None)."""
        try:
            yield
        except httpx.HTTPError as exc:
            reason = redact(transport_failure(exc, self._cert_dir), *hidden)
            kind = QrsUntrusted if server_certificate_rejected(exc) else QrsError
            raise kind(self.name, method, path, None, reason) from exc

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Scalar | None] | None = None,
        *,
        stream: bool = False,
        transfer: bool = False,
        content: AsyncIterable[bytes] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request, path from the host root; returns a 2xx response or raises QrsError."""
        xrfkey = new_xrfkey()
        # Built by hand, not httpx params: httpx writes spaces as '+', QRS wants %20.
        query = query_string({**(params or {}), "xrfkey": xrfkey})
        status: int | None = None
        started = time.perf_counter()
        try:
            with self._translated(method, path, query, xrfkey):
                request = self._http.build_request(
                    method,
                    f"{path}?{query}",
                    headers={"X-Qlik-Xrfkey": xrfkey, **(headers or {})},
                    content=content,
                    json=json,
                    timeout=self._transfer_timeout if transfer else httpx.USE_CLIENT_DEFAULT,
                )
                response = await self._http.send(request, stream=stream)
                status = response.status_code
                if status >= 400:
                    body = await _error_body(response) if stream else response.content
                    check_response(self.name, method, path, status, body, hide=(query, xrfkey))
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.debug("%s: %s %s -> %s in %.0f ms", self.name, method, path, status, elapsed)
        return response

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Scalar | None] | None = None,
        *,
        retry: bool | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """A call under /qrs, repeated on transient failures when it is safe to repeat."""
        repeat = method in IDEMPOTENT if retry is None else retry
        attempts = self.retry.attempts if repeat else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._send(method, f"/qrs{path}", params, **kw)
            except QrsNotFound as exc:
                if method == "DELETE" and attempt > 1:
                    # An earlier attempt deleted it; only its answer was lost.
                    log.debug("%s: DELETE %s already done by an earlier attempt", self.name, exc.path)
                    return httpx.Response(204)
                raise
            except QrsError as exc:
                if not exc.transient or attempt == attempts:
                    raise
                await self._pause(attempt, attempts, exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _pause(self, attempt: int, attempts: int, exc: QrsError) -> None:
        delay = self.retry.delay(attempt)
        log.debug(
            "%s: %s %s failed (%s), attempt %d of %d in %.2f s",
            self.name, exc.method, exc.path, exc.status or "no answer", attempt + 1, attempts, delay,
        )  # fmt: skip
        await asyncio.sleep(delay)

    async def _json(
        self, method: str, path: str, params: Mapping[str, Scalar | None] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        """Status and decoded body of a call under /qrs."""
        response = await self._call(method, path, params, **kw)
        return response.status_code, check_response(
            self.name, method, f"/qrs{path}", response.status_code, response.content
        )

    async def _data(
        self, method: str, path: str, params: Mapping[str, Scalar | None] | None = None, **kw: Any
    ) -> Any:
        return (await self._json(method, path, params, **kw))[1]

    async def _one(
        self,
        model: type[M],
        method: str,
        path: str,
        params: Mapping[str, Scalar | None] | None = None,
        **kw: Any,
    ) -> M:
        status, data = await self._json(method, path, params, **kw)
        return read_model(model, data, site=self.name, method=method, path=f"/qrs{path}", status=status)

    async def _many(self, model: type[M], path: str, filter: str | None = None) -> list[M]:
        status, data = await self._json("GET", path, {"filter": filter})
        return read_models(model, data, site=self.name, method="GET", path=f"/qrs{path}", status=status)

    # -- reading entities --------------------------------------------------------------------

    async def about(self) -> About:
        return await self._one(About, "GET", "/about")

    async def get_app(self, app_id: UUID) -> App:
        return await self._one(App, "GET", f"/app/{app_id}")

    async def apps(self, filter: str | None = None) -> list[App]:
        return await self._many(App, "/app/full", filter)

    async def apps_named_in_stream(self, name: str, stream_id: UUID) -> list[App]:
        """Apps in the stream with this name: exact matches, else QRS's case-insensitive ones."""
        found = await self.apps(all_of(eq("name", name), eq("stream.id", stream_id)))
        return best_name_matches(found, name)

    async def count(self, entity: str, filter: str | None = None) -> int:
        path = f"/{_entity_path(entity)}/count"
        value = unwrap_value(await self._data("GET", path, {"filter": filter}))
        if not isinstance(value, int):
            raise QrsError(self.name, "GET", f"/qrs{path}", 200, "answer is not a count")
        return value

    async def get_stream(self, stream_id: UUID) -> Stream:
        return await self._one(Stream, "GET", f"/stream/{stream_id}")

    async def streams(self, filter: str | None = None) -> list[Stream]:
        return await self._many(Stream, "/stream/full", filter)

    async def stream_by_name(self, name: str) -> Stream | None:
        """The stream called ``name`` (exactly, else case-insensitively); None if there is none.

        QRS allows two streams with one name; guessing which one gets an app would publish it
        where nobody approved it, so that raises instead.
        """
        found = best_name_matches(await self.streams(eq("name", name)), name)
        if len(found) > 1:
            raise PromoterError(f"{self.name}: {len(found)} streams are named {name!r}; rename all but one")
        return found[0] if found else None

    async def get_user(self, user_id: UUID) -> User:
        return await self._one(User, "GET", f"/user/{user_id}")

    async def users(self, filter: str | None = None) -> list[User]:
        return await self._many(User, "/user/full", filter)

    async def user_by_account(self, account: str) -> User | None:
        """The user ``DIRECTORY\\userid`` (as in modifiedByUserName), compared case-insensitively."""
        directory, sep, user_id = account.partition("\\")
        if not sep or not directory or not user_id:
            raise ValueError(f"not a DIRECTORY\\userid account: {account!r}")
        found = await self.users(all_of(eq("userDirectory", directory), eq("userId", user_id)))
        wanted = account.casefold()
        return next((user for user in found if user.account.casefold() == wanted), None)

    async def user_email(self, user_id: UUID, attribute: str = "email") -> str | None:
        """The user's address from a user attribute (case-insensitive type); None when unknown."""
        try:
            user = await self.get_user(user_id)
        except QrsNotFound:
            return None
        return user.attribute(attribute)

    async def tag_by_name(self, name: str) -> Tag | None:
        found = [tag for tag in await self._many(Tag, "/tag/full", eq("name", name)) if tag.name == name]
        return found[0] if found else None

    async def ensure_tag(self, name: str) -> Tag:
        """The tag called ``name``, created when missing."""
        tag = await self.tag_by_name(name)
        if tag is not None:
            return tag
        created = await self.create_entity("tag", {"name": name})
        return read_model(Tag, created, site=self.name, method="POST", path="/qrs/tag", status=201)

    async def custom_property_definitions(self, filter: str | None = None) -> list[CustomPropertyDefinition]:
        return await self._many(CustomPropertyDefinition, "/custompropertydefinition/full", filter)

    async def create_entity(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /qrs/{entity} (201): streams, users, tags, custom property definitions."""
        path = f"/{_entity_path(entity)}"
        data = await self._data("POST", path, json=body)
        if not isinstance(data, dict):
            raise QrsError(self.name, "POST", f"/qrs{path}", 201, "answer is not an entity")
        return data

    # -- moving apps -------------------------------------------------------------------------

    async def export_app(
        self, app_id: UUID, dest: Path, *, skip_data: bool = False, progress: Progress | None = None
    ) -> int:
        """Export the app (two steps) and stream it into ``dest``; returns the bytes written.

        The export POST names its own token, so repeating it is safe. A download can only be
        fetched once, so a failed download starts over with a new token.
        """
        attempts = self.retry.attempts
        for attempt in range(1, attempts + 1):
            path = f"/app/{app_id}/export/{uuid4()}"
            export = await self._one(
                AppExportResponse,
                "POST",
                path,
                {"skipdata": skip_data},
                retry=True,
                transfer=True,
            )
            try:
                return await self._download(export.download_path, dest, progress)
            except QrsError as exc:
                if not exc.transient or attempt == attempts:
                    raise
                await self._pause(attempt, attempts, exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _download(self, download_path: str, dest: Path, progress: Progress | None) -> int:
        """GET the export into ``dest``: in place for the uploads that follow it (see
        transfer.landing), else through a hidden temporary name."""
        try:
            path, query = download_location(download_path)
        except ValueError as exc:
            raise QrsError(self.name, "GET", "downloadPath", 201, str(exc)) from None
        # The download is served from the host root, not /qrs, and wants the Xrfkey too.
        params = dict(parse_qsl(query, keep_blank_values=True))
        started = time.perf_counter()
        response = await self._send("GET", path, params, stream=True, transfer=True)
        landing = landing_at(dest)
        try:
            with self._translated("GET", path):
                # Socket reads as they come (no re-chunking copies); writes are batched per MB.
                if landing is None:
                    received = await save_stream(response.aiter_bytes(), dest, progress)
                else:
                    size = _content_length(response)
                    try:
                        received = await land_stream(response.aiter_bytes(), landing, size, progress)
                    except ValueError as exc:  # fewer bytes than announced: a download cut short
                        raise QrsError(self.name, "GET", path, None, str(exc)) from None
        finally:
            await response.aclose()
        log.debug("%s: downloaded %d bytes in %.1f s", self.name, received, time.perf_counter() - started)
        return received

    async def upload_app(
        self,
        path: Path,
        name: str,
        *,
        keep_data: bool = True,
        since: datetime | None = None,
        progress: Progress | None = None,
    ) -> App:
        """Upload a QVF file as a new app called ``name``, streamed from disk; 201 gives the app.

        Pass a unique name (flows use a temporary one): when an attempt fails, an app with exactly
        that name that passes ``not_our_upload`` (ours, created since ``since`` or this call, with
        the file's size) is the upload that landed unseen, and is adopted instead of a second copy.
        """
        # While the file still lands (an export in progress), its size is the export's Content-Length.
        size = await file_size(path, self.name)
        began = since or qrs_now()
        attempts = self.retry.attempts
        for attempt in range(1, attempts + 1):
            body = UploadBody(path, size, self.name, progress)
            try:
                response = await self._send(
                    "POST",
                    "/qrs/app/upload",
                    {"name": name, "keepdata": keep_data},
                    content=body,
                    headers={"Content-Type": QVF_MEDIA_TYPE, "Content-Length": str(size)},
                    transfer=True,
                )
            except QrsError as exc:
                if not exc.transient:
                    raise
                # With the whole file sent and no answer, QRS may still be importing it.
                importing = exc.status is None and body.sent >= size
                sent = size if keep_data else None
                landed = await self._landed(name, began, sent, patient=importing)
                if landed is not None:
                    return landed
                if attempt == attempts:
                    raise
                await self._pause(attempt, attempts, exc)
                continue
            finally:
                body.close()
            data = check_response(
                self.name, "POST", "/qrs/app/upload", response.status_code, response.content
            )
            return read_model(App, data, site=self.name, method="POST", path="/qrs/app/upload", status=201)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _landed(self, name: str, began: datetime, size: int | None, *, patient: bool) -> App | None:
        """The app an unanswered upload or copy called ``name`` created, if one did; ``patient`` looks
        again while it may appear."""
        looks = self.retry.attempts if patient else 1
        for look in range(1, looks + 1):
            found = [
                app
                for app in await self.apps(eq("name", name))
                if app.name == name
                and not_our_upload(app, uploader=self.account, since=began, size=size) is None
            ]
            if found:
                found.sort(key=lambda app: app.created_date or began)
                if len(found) > 1:
                    # The same file each time, so any one is right; the caller removes its temporary name.
                    # (The name itself holds the request's secret: not logged.)
                    log.warning(
                        "%s: %d apps with one temporary name landed (%s); using the newest",
                        self.name, len(found), ", ".join(str(app.id) for app in found),
                    )  # fmt: skip
                log.debug("%s: app %s landed although its answer was lost", self.name, found[-1].id)
                return found[-1]
            if look < looks:
                await asyncio.sleep(self.retry.delay(look))
        return None

    async def publish_app(self, app_id: UUID, stream_id: UUID, name: str | None = None) -> App:
        """Publish the app (it keeps its id) to a stream, optionally under a new name."""
        path = f"/app/{app_id}/publish"
        try:
            return await self._one(App, "PUT", path, {"stream": stream_id, "name": name})
        except QrsBadRequest:
            # A repeat whose first attempt went through is refused as "already published".
            app = await self.get_app(app_id)
            if app.published and app.stream is not None and app.stream.id == stream_id:
                return app
            raise

    async def replace_app(self, source_id: UUID, target_id: UUID) -> App:
        """Overwrite the target app with the source app; the target keeps its id, the source stays."""
        app = await self._one(App, "PUT", f"/app/{source_id}/replace", {"app": target_id})
        # QRS does not document which of the two apps the answer describes.
        return app if app.id == target_id else await self.get_app(target_id)

    async def copy_app(
        self,
        app_id: UUID,
        name: str | None = None,
        *,
        include_custom_properties: bool = False,
        since: datetime | None = None,
    ) -> App:
        """A server-side copy (201), owned by the calling user; never repeated blindly.

        With ``since``, ``name`` must be unique to this copy (flows use a temporary one): when an
        answer is lost, an app with that name that passes ``not_our_upload`` (ours, created since
        ``since``) is the copy that landed unseen, and is returned instead of copying again.
        """
        params = {"name": name, "includecustomproperties": include_custom_properties}
        path = f"/app/{app_id}/copy"
        if since is None or name is None:
            return await self._one(App, "POST", path, params)
        attempts = self.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._one(App, "POST", path, params)
            except QrsError as exc:
                if not exc.transient:
                    raise
                # No answer, or a 5xx: QRS may have made the copy all the same.
                landed = await self._landed(name, since, None, patient=exc.status is None)
                if landed is not None:
                    return landed
                if attempt == attempts:
                    raise
                await self._pause(attempt, attempts, exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def delete_app(self, app_id: UUID) -> None:
        await self._call("DELETE", f"/app/{app_id}")

    async def update_app(self, app_id: UUID, change: Callable[[App], None]) -> App:
        """Read the app, let ``change`` edit it, PUT it whole; on 409 re-read and re-apply once."""
        for attempt in (1, 2):
            app = await self.get_app(app_id)
            change(app)
            try:
                return await self._one(App, "PUT", f"/app/{app_id}", json=app.to_qrs())
            except QrsConflict:
                if attempt == 2:
                    raise
                log.debug(
                    "%s: app %s changed while we edited it; applying the change again", self.name, app_id
                )
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def reload_app(self, app_id: UUID) -> None:
        await self._call("POST", f"/app/{app_id}/reload")

    # -- change notifications ----------------------------------------------------------------

    async def create_notification(
        self,
        url: str,
        *,
        entity: str = "App",
        change_type: int = ChangeType.UPDATE,
        property_name: str | None = None,
        filter: str | None = None,
    ) -> UUID:
        """Subscribe ``url`` to changes; returns the handle. Subscriptions die with a QRS restart."""
        params = {"name": entity, "changetype": change_type, "propertyname": property_name, "filter": filter}
        value = unwrap_value(await self._data("POST", "/notification", params, json=url))
        try:
            return UUID(str(value))
        except ValueError:
            raise QrsError(self.name, "POST", "/qrs/notification", 201, "answer is not a handle") from None

    async def delete_notification(self, handle: UUID) -> None:
        await self._call("DELETE", "/notification", {"handle": handle})

    async def changes_since(self, since: datetime, types: Sequence[str]) -> list[ChangeSince]:
        """Changes of the given entity types since a time (what notifications may have missed)."""
        path = "/notification/changes"
        data = await self._data("GET", path, {"since": format_qrs_time(since), "types": ",".join(types)})
        return read_models(
            ChangeSince, data or [], site=self.name, method="GET", path=f"/qrs{path}", status=200
        )

    # -- the Qlik side that `qlik setup` creates and `doctor` checks ---------------------------

    async def create_custom_property_definition(
        self, definition: CustomPropertyDefinition
    ) -> CustomPropertyDefinition:
        """POST /qrs/custompropertydefinition (201). Not repeated blindly: a definition whose answer
        was lost is found by name the next time `qlik setup` runs."""
        return await self._one(
            CustomPropertyDefinition, "POST", "/custompropertydefinition", json=definition.to_qrs()
        )

    async def update_custom_property_definition(
        self, definition: CustomPropertyDefinition
    ) -> CustomPropertyDefinition:
        """PUT the definition as read and then changed; its modifiedDate makes QRS answer 409
        (QrsConflict) when someone changed it since it was read."""
        path = f"/custompropertydefinition/{definition.id}"
        return await self._one(CustomPropertyDefinition, "PUT", path, json=definition.to_qrs())

    async def custom_property_values_in_use(
        self, definition: CustomPropertyDefinition
    ) -> frozenset[str] | None:
        """The values of ``definition`` set on any app, stream, user... of its object types, case-folded;
        None when one of its object types cannot be searched here (then any value may be in use)."""
        found: set[str] = set()
        for object_type in definition.object_types or []:
            try:
                path = f"/{_entity_path(object_type)}/full"
                holders = await self._many(
                    HasCustomProperties, path, eq("customProperties.definition.id", definition.id)
                )
            except (ValueError, QrsNotFound):  # not an entity name, or an entity this QRS cannot list
                return None
            found.update(
                value.value.casefold()
                for holder in holders
                for value in holder.custom_properties
                if value.definition.id == definition.id
            )
        return frozenset(found)


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


async def _error_body(response: httpx.Response, limit: int = 1024) -> bytes:
    """The start of a streamed error answer: enough for the message, never a whole app."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    await response.aclose()
    return body[:limit]
