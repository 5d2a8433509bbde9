"""Reading QRS answers: status to QrsError, body to models, ``{"value": …}`` unwrapped; no I/O.

Everything here takes plain values (status, bytes, strings), so tests feed it recorded answers
without a server, as gidgethub's sansio layer is tested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError

from promoter.errors import QrsError, error_for_status

M = TypeVar("M", bound=BaseModel)

REDACTED = "***"


def redact(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret (an xrfkey, a query string) replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def check_response(
    site: str, method: str, path: str, status: int, body: bytes | str, *, hide: Sequence[str] = ()
) -> Any:
    """Turn one QRS answer into data, or raise the QrsError the caller can act on.

    QRS error bodies are plain text (``400::Cannot parse the expression``); success bodies are
    JSON or empty (204). ``hide`` (the query string, the xrfkey) is cut out of an error body in
    case the server echoes the request.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if status >= 400:
        raise error_for_status(site, method, path, status, redact(text, *hide))
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise QrsError(site, method, path, status, f"answer is not JSON: {text}") from None


def unwrap_value(data: Any) -> Any:
    """The scalar inside ``{"value": …}``: QRS wraps counts and handles that its spec calls bare."""
    if isinstance(data, dict) and "value" in data:
        return data["value"]
    return data


def read_model(model: type[M], data: Any, *, site: str, method: str, path: str, status: int) -> M:
    """One entity from decoded JSON; a shape we cannot read is a QrsError naming the call."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise QrsError(site, method, path, status, _shape_problem(model.__name__, exc)) from None


def read_models(model: type[M], data: Any, *, site: str, method: str, path: str, status: int) -> list[M]:
    """A list of entities from decoded JSON (``/qrs/<entity>/full``)."""
    try:
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise QrsError(site, method, path, status, _shape_problem(f"list of {model.__name__}", exc)) from None


def _shape_problem(what: str, exc: ValidationError) -> str:
    # Field locations and reasons only: never the rejected values, which may be whole entities.
    problems = [
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return f"answer is not a {what}: " + "; ".join(problems[:3])


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def best_name_matches(found: Sequence[N], name: str) -> list[N]:
    """The entities called exactly ``name``; failing that, those equal ignoring case.

    QRS's ``eq`` compares strings case-insensitively, so a filter on "Sales" also returns
    "SALES". An exact match wins; the case-insensitive fallback keeps the original product's
    behaviour for names typed with a different case in the QMC.
    """
    exact = [item for item in found if item.name == name]
    if exact:
        return exact
    folded = name.casefold()
    return [item for item in found if item.name.casefold() == folded]


def download_location(download_path: str) -> tuple[str, str]:
    """Path and query of an export's ``downloadPath``, to be fetched from the site's host root.

    QRS answers ``/tempcontent/<id>/<url-encoded name>.qvf?serverNodeId=<id>``: the path is
    already percent-encoded and is not under ``/qrs``. Only the path and query are used, so an
    answer naming another host can never make us send our client certificate elsewhere.
    """
    parts = urlsplit(download_path.strip())
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        raise ValueError("downloadPath is not an absolute path on the site")
    return parts.path, parts.query
