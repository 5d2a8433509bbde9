"""Reading QRS answers without a server: status to error class, bodies to models, names matched."""

from __future__ import annotations

from uuid import uuid4

import pytest

from promoter.errors import QrsBadRequest, QrsConflict, QrsError, QrsNotFound, QrsRefused
from promoter.qrs.models import Stream
from promoter.qrs.responses import (
    best_name_matches,
    check_response,
    download_location,
    read_model,
    read_models,
    unwrap_value,
)
from promoter.qrs.retry import RetryPolicy

OWNER = {"id": str(uuid4()), "userId": "sa_repository", "userDirectory": "INTERNAL"}


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, QrsBadRequest), (401, QrsRefused), (403, QrsRefused), (404, QrsNotFound), (409, QrsConflict)],
)
def test_client_errors_fail_fast_as_their_own_class(status: int, error: type[QrsError]) -> None:
    """400/401/403/404/409 become the subclass the caller acts on, and are not transient."""
    with pytest.raises(error) as caught:
        check_response("dev", "GET", "/app/full", status, b"400::Cannot parse the expression")

    assert (status, False) == (caught.value.status, caught.value.transient)


def test_server_errors_are_transient() -> None:
    """A 503 is a plain QrsError that a later attempt may get past."""
    with pytest.raises(QrsError) as caught:
        check_response("dev", "GET", "/about", 503, "Service Unavailable")

    assert type(caught.value) is QrsError
    assert caught.value.transient


def test_error_body_hides_what_the_server_echoed() -> None:
    """If QRS echoes the request, the query string and xrfkey are cut out of the message."""
    query = "filter=name%20eq%20%27x%27&xrfkey=abcdEFGH12345678"
    body = f"400::bad request /qrs/app/full?{query} key abcdEFGH12345678"

    with pytest.raises(QrsBadRequest) as caught:
        check_response("dev", "GET", "/app/full", 400, body, hide=(query, "abcdEFGH12345678"))

    assert "abcdEFGH12345678" not in str(caught.value)
    assert "xrfkey" not in str(caught.value)


def test_success_bodies_are_json_or_nothing() -> None:
    """200 with JSON gives the data; 204 with no body gives None."""
    assert (
        check_response("dev", "GET", "/about", 200, b'{"a": 1}'),
        check_response("dev", "DELETE", "/app/x", 204, b""),
    ) == ({"a": 1}, None)


def test_a_success_that_is_not_json_is_an_error() -> None:
    """An HTML page from something in between is reported, not parsed as an entity."""
    with pytest.raises(QrsError, match="not JSON"):
        check_response("dev", "GET", "/about", 200, b"<html>proxy login</html>")


def test_scalar_answers_are_unwrapped() -> None:
    """QRS wraps counts and handles as {"value": …}; a bare value is accepted too."""
    assert (unwrap_value({"value": 3}), unwrap_value(3), unwrap_value({"value": "h"})) == (3, 3, "h")


def test_an_unexpected_shape_names_the_call_and_field_not_the_data() -> None:
    """A stream without its name is reported with the field, without echoing the answer."""
    with pytest.raises(QrsError) as caught:
        read_model(Stream, {"id": str(uuid4()), "secretish": "do-not-echo"}, site="dev", method="GET",
                   path="/stream/1", status=200)  # fmt: skip

    assert "name" in str(caught.value)
    assert "do-not-echo" not in str(caught.value)
    assert not caught.value.transient


def test_lists_of_entities_are_read() -> None:
    """/stream/full answers a JSON array of streams."""
    streams = read_models(
        Stream, [{"id": str(uuid4()), "name": "Sales", "owner": OWNER}], site="dev", method="GET",
        path="/stream/full", status=200,
    )  # fmt: skip

    assert [s.name for s in streams] == ["Sales"]


def test_exact_name_wins_over_case_insensitive_match() -> None:
    """QRS's eq ignores case; of "Sales" and "SALES", a search for "Sales" keeps only "Sales"."""
    found = [Stream(id=uuid4(), name="SALES"), Stream(id=uuid4(), name="Sales")]

    assert [s.name for s in best_name_matches(found, "Sales")] == ["Sales"]


def test_case_insensitive_match_when_there_is_no_exact_one() -> None:
    """Without an exact match, the names equal ignoring case are kept (as QRS returned them)."""
    found = [Stream(id=uuid4(), name="SALES"), Stream(id=uuid4(), name="Marketing")]

    assert [s.name for s in best_name_matches(found, "sales")] == ["SALES"]


def test_download_location_is_the_host_root_path_and_query() -> None:
    """downloadPath is used as path + query on the site itself, encoding untouched."""
    path = "/tempcontent/d989fffd/User%20retention.qvf?serverNodeId=80db9b97"

    assert download_location(path) == ("/tempcontent/d989fffd/User%20retention.qvf", "serverNodeId=80db9b97")


def test_download_location_never_points_at_another_host() -> None:
    """An absolute URL is reduced to its path; a path that would read as a host is refused."""
    assert download_location("https://elsewhere.example/tempcontent/a.qvf") == ("/tempcontent/a.qvf", "")
    assert download_location("//elsewhere.example/tempcontent/a.qvf") == ("/tempcontent/a.qvf", "")
    with pytest.raises(ValueError):
        download_location("https://site//elsewhere.example/a.qvf")


def test_retry_delays_grow_and_stay_under_the_cap() -> None:
    """Each wait lies between half and all of min(max_delay, base * 2**(n-1))."""
    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=5.0)

    delays = [policy.delay(n) for n in range(1, 6)]

    assert all(step / 2 <= d <= step for d, step in zip(delays, [1, 2, 4, 5, 5], strict=True))
    assert [RetryPolicy.immediate().delay(n) for n in (1, 2)] == [0.0, 0.0]
