"""A user is (userDirectory, userId) compared without regard to case, as on a real QRS."""

from __future__ import annotations

from promoter.sandbox.server import SandboxSite
from tests.sandbox.conftest import Qrs


def accounts(qrs: Qrs, user_id: str) -> list[tuple[str, str]]:
    users = qrs.get("/qrs/user/full", params={"filter": f"userId eq '{user_id}'"}).json()
    return sorted((u["userDirectory"], u["userId"]) for u in users)


def test_a_caller_spelt_in_other_case_is_the_same_user(qrs: Qrs, dev: SandboxSite) -> None:
    """Internal\\SA_API calling after INTERNAL\\sa_api is that user: what it creates is owned by it."""
    qrs.get("/qrs/about")
    other_case = Qrs(dev, user="UserDirectory=Internal; UserId=SA_API")

    stream = other_case.post("/qrs/stream", json={"name": "Owned"}).json()
    other_case.close()

    users = qrs.get("/qrs/user/full", params={"filter": "userId eq 'sa_api'"}).json()
    assert [(u["userDirectory"], u["userId"]) for u in users] == [("INTERNAL", "sa_api")]
    assert stream["owner"]["id"] == users[0]["id"]


def test_creating_a_user_that_exists_in_other_case_is_409(qrs: Qrs) -> None:
    """POST /qrs/user for Internal\\SA_API when INTERNAL\\sa_api exists is refused; one user remains."""
    qrs.get("/qrs/about")  # INTERNAL\sa_api now exists

    answer = qrs.post("/qrs/user", json={"userDirectory": "Internal", "userId": "SA_API", "name": "again"})

    assert answer.status_code == 409, answer.text
    assert accounts(qrs, "sa_api") == [("INTERNAL", "sa_api")]


def test_renaming_a_user_onto_another_in_other_case_is_409(qrs: Qrs) -> None:
    """A PUT that would make ACME\\Rep equal ACME\\rep (the directory or id in other case) is refused."""
    rep = qrs.post("/qrs/user", json={"userDirectory": "ACME", "userId": "rep"}).json()
    other = qrs.post("/qrs/user", json={"userDirectory": "ACME", "userId": "rep2"}).json()

    answer = qrs.put(f"/qrs/user/{other['id']}", json={**other, "userDirectory": "acme", "userId": "REP"})

    assert answer.status_code == 409, answer.text
    assert qrs.get(f"/qrs/user/{rep['id']}").json()["userId"] == "rep"


def test_a_user_may_change_the_case_of_its_own_name(qrs: Qrs) -> None:
    """Changing only the case of a user's own directory is not a clash with itself."""
    user = qrs.post("/qrs/user", json={"userDirectory": "acme", "userId": "manager"}).json()

    answer = qrs.put(f"/qrs/user/{user['id']}", json={**user, "userDirectory": "ACME"})

    assert answer.status_code == 200, answer.text
    assert accounts(qrs, "manager") == [("ACME", "manager")]
