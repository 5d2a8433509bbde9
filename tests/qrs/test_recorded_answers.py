"""Recorded sandbox answers (tests/samples/qrs/<case>/<status>.<ext>) read by the pure response code."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from promoter.errors import QrsBadRequest, QrsError, QrsNotFound, QrsRefused
from promoter.qrs.models import App, AppExportResponse
from promoter.qrs.responses import check_response, download_location, read_model, read_models, unwrap_value

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "qrs"


def recorded(case: str) -> tuple[int, bytes]:
    """The status and body of a recorded answer; the file name is the status."""
    (answer,) = (SAMPLES / case).iterdir()
    return int(answer.stem), answer.read_bytes()


def decoded(case: str, method: str = "GET", path: str = "/x") -> object:
    status, body = recorded(case)
    return check_response("dev", method, path, status, body)


def test_an_uploaded_app_is_read_with_its_owner() -> None:
    """The 201 answer of an upload is an App owned by the calling user, never published."""
    app = read_model(App, decoded("app-upload"), site="dev", method="POST", path="/app/upload", status=201)

    assert (app.name, app.owner.account, app.published, app.stream) == (
        "Sales & Ops 'Q1'",
        "INTERNAL\\sa_api",
        False,
        None,
    )


def test_a_filtered_list_of_full_apps() -> None:
    """/qrs/app/full answers a list of full apps."""
    apps = read_models(
        App, decoded("app-full-filtered"), site="dev", method="GET", path="/app/full", status=200
    )

    assert [app.name for app in apps] == ["Sales & Ops 'Q1'"]


def test_a_count_and_a_notification_handle_are_wrapped_values() -> None:
    """Counts and subscription handles come as {"value": …}."""
    count = unwrap_value(decoded("app-count"))
    handle = UUID(str(unwrap_value(decoded("notification-create", "POST"))))

    assert (count, handle.version) == (1, 4)


def test_an_export_names_its_download_on_the_host_root() -> None:
    """The export answer's downloadPath is a /tempcontent path with the name percent-encoded."""
    export = read_model(
        AppExportResponse,
        decoded("export-start", "POST"),
        site="dev",
        method="POST",
        path="/export",
        status=201,
    )
    path, query = download_location(export.download_path)

    assert path.startswith("/tempcontent/") and path.endswith("/Sales%20%26%20Ops%20%27Q1%27.qvf")
    assert query.startswith("serverNodeId=")


@pytest.mark.parametrize(
    ("case", "error"),
    [("xsrf-missing", QrsRefused), ("filter-unparsable", QrsBadRequest), ("app-not-found", QrsNotFound)],
)
def test_plain_text_errors_become_their_class(case: str, error: type[QrsError]) -> None:
    """QRS error bodies are plain text; the class follows the status and the text is kept."""
    status, body = recorded(case)

    with pytest.raises(error) as caught:
        check_response("dev", "GET", "/x", status, body)

    assert caught.value.body_excerpt == body.decode()
