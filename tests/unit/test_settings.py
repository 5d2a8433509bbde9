"""Settings: one TOML file plus QSP_ variables; every failure names the file (or variable) and the field."""

from __future__ import annotations

import os
import re
import threading
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import BaseModel

from promoter.errors import SettingsError
from promoter.settings import Settings, current_settings, load_settings, write_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "qs-promoter.example.toml"
SECRET = "hunter2-Very-Secret-Password"

GOOD = """
cert_root = "certs"

[source_site]
host = "qlik-dev"
public_fqdn = "qlik-dev.example.com"

[target_sites.test]
host = "qlik-test"

[target_sites.prod]
host = "qlik-prod"
port = 4243

[email]
enabled = true
smtp_host = "smtp.example.com"
smtp_port = 587
username = "promoter"
password = "{secret}"
"""


def write(tmp_path: Path, text: str, name: str = "qs-promoter.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("{secret}", SECRET), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    return str(caught.value)


def test_good_file_loads_with_defaults_for_what_it_leaves_out(tmp_path: Path) -> None:
    """A minimal file gives the sites, the email settings, and defaults for everything else."""
    settings = load_settings(write(tmp_path, GOOD))

    assert settings.source_site.host == "qlik-dev"
    assert settings.source_site.port == 4242
    assert sorted(settings.target_sites) == ["prod", "test"]
    assert settings.site("prod").port == 4243
    assert settings.email.password is not None and settings.email.password.get_secret_value() == SECRET
    assert settings.cert_dir("test") == tmp_path / "certs/test"  # from the settings file's folder
    assert settings.properties.promotion_approval == "PromotionApproval"
    assert settings.source_site.hub_link("abc") == "https://qlik-dev.example.com/sense/app/abc"


def test_wrong_type_names_file_and_field(tmp_path: Path) -> None:
    """A port that is not a number: the message names the file and source_site.port."""
    path = write(tmp_path, GOOD.replace('host = "qlik-dev"', 'host = "qlik-dev"\nport = "forty-two"'))

    message = load_error(path)

    assert f"{path}: source_site.port: Input should be a valid integer" in message


def test_broken_toml_names_the_file_and_line(tmp_path: Path) -> None:
    """A file that is not TOML: the message names the file, says 'not valid TOML' and where."""
    path = write(tmp_path, '[source_site]\nhost = "qlik-dev\n')

    message = load_error(path)

    assert message.startswith(f"{path}: not valid TOML:")
    assert "line 2" in message


def test_missing_file_is_reported_not_skipped(tmp_path: Path) -> None:
    """A missing file is an error (pydantic-settings alone would silently skip it)."""
    path = tmp_path / "nope.toml"

    assert load_error(path) == f"{path}: settings file not found"


def test_misspelt_key_is_an_error_naming_it(tmp_path: Path) -> None:
    """A typo in a key (extra="forbid") is refused with the misspelt key's path."""
    path = write(tmp_path, GOOD.replace("smtp_port = 587", "smtp_prot = 587"))

    message = load_error(path)

    assert f"{path}: email.smtp_prot: Extra inputs are not permitted" in message


TYPOS = {
    "top level": ("cert_root = ", "cert_rot = ", "cert_rot", "cert_root"),
    "a section": ("[email]", "[emial]", "emial", "email"),
    "the source site": ('host = "qlik-dev"', 'hots = "qlik-dev"', "source_site.hots", "host"),
    "a target site": ("port = 4243", "prot = 4243", "target_sites.prod.prot", "port"),
    "email": ("smtp_host = ", "smtp_hots = ", "email.smtp_hots", "smtp_host"),
    "a dotted key": ("cert_root = ", "prefect.work_pol = 'x'\ncert_root = ", "prefect.work_pol", "work_pool"),
}


@pytest.mark.parametrize(("good", "bad", "where", "meant"), TYPOS.values(), ids=TYPOS.keys())
def test_a_typo_names_its_line_and_the_nearest_setting(
    tmp_path: Path, good: str, bad: str, where: str, meant: str
) -> None:
    """A misspelt key, in any section (a site alias included) or dotted, is reported with the
    number of the line that holds it and the setting of that section it most resembles."""
    text = GOOD.replace(good, bad, 1)
    path = write(tmp_path, text)
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if row.startswith(bad.split("\n")[0]))

    message = load_error(path)

    assert (
        f"{path}: {where}: Extra inputs are not permitted (line {line}); did you mean {meant!r}?" in message
    )


def test_a_key_like_no_setting_says_so(tmp_path: Path) -> None:
    """A key that resembles no setting of its section is called not a setting, with its line."""
    path = write(tmp_path, GOOD + "zzz = 1\n")
    line = len((GOOD + "zzz = 1\n").splitlines())

    message = load_error(path)

    assert f"{path}: email.zzz: Extra inputs are not permitted (line {line}); not a setting" in message


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QSP_SOURCE_SITE__PORT wins over the file, and the rest of source_site still comes from the file."""
    monkeypatch.setenv("QSP_SOURCE_SITE__PORT", "4243")
    monkeypatch.setenv("QSP_EMAIL__PASSWORD", "from-the-environment")

    settings = load_settings(write(tmp_path, GOOD))

    assert (settings.source_site.host, settings.source_site.port) == ("qlik-dev", 4243)
    assert settings.email.password is not None
    assert settings.email.password.get_secret_value() == "from-the-environment"


def test_bad_environment_value_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value from a QSP_ variable names that variable, not the file."""
    monkeypatch.setenv("QSP_SOURCE_SITE__PORT", "not-a-port")

    message = load_error(write(tmp_path, GOOD))

    assert message.startswith("environment variable QSP_SOURCE_SITE__PORT: source_site.port:")


def test_qsp_config_names_the_file_when_no_path_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit path, QSP_CONFIG says which file to read."""
    monkeypatch.setenv("QSP_CONFIG", str(write(tmp_path, GOOD, "elsewhere.toml")))

    assert load_settings().source_site.host == "qlik-dev"


def test_approver_csv_is_merged_with_the_file(tmp_path: Path) -> None:
    """The original's CSV (StreamID, ApprovalEmailAddress; Excel BOM; upper-case ids; blank lines) is
    merged with [email.stream_approvers]; duplicates collapse and lookups ignore letter case."""
    csv = tmp_path / "ApprovalStreamsToEmailAddressMap.csv"
    csv.write_text(
        "\ufeffStreamID, ApprovalEmailAddress\r\n"
        "90081726-8077-4A1B-8320-86986AC3E55C, you@you.net\r\n"
        "\r\n"
        "cb2f9262-daf5-4131-ba4f-8c857caeca34, them@who.org\r\n"
        "90081726-8077-4a1b-8320-86986ac3e55c, boss@you.net\r\n",
        encoding="utf-8",
    )
    text = GOOD + (
        f'stream_approvers_csv = "{csv.as_posix()}"\n'
        "[email.stream_approvers]\n"
        '"90081726-8077-4a1b-8320-86986ac3e55c" = ["you@you.net", "lead@you.net"]\n'
    )

    email = load_settings(write(tmp_path, text)).email

    assert email.approvers_for("90081726-8077-4A1B-8320-86986AC3E55C") == [
        "you@you.net",
        "lead@you.net",
        "boss@you.net",
    ]
    assert email.approvers_for("cb2f9262-daf5-4131-ba4f-8c857caeca34") == ["them@who.org"]
    assert email.approvers_for("00000000-0000-0000-0000-000000000000") == []


def test_bad_csv_row_names_the_csv_file_and_line(tmp_path: Path) -> None:
    """A CSV row without an address names the CSV file and its line number."""
    csv = tmp_path / "approvers.csv"
    csv.write_text("StreamID, ApprovalEmailAddress\nabc, not-an-address\n", encoding="utf-8")

    message = load_error(write(tmp_path, GOOD + f'stream_approvers_csv = "{csv.as_posix()}"\n'))

    assert f"{csv}:2: expected 'StreamID, email address'" in message
    assert "email" in message


def test_missing_csv_names_the_field(tmp_path: Path) -> None:
    """A CSV path that does not exist names stream_approvers_csv."""
    message = load_error(write(tmp_path, GOOD + 'stream_approvers_csv = "missing.csv"\n'))

    missing = tmp_path / "missing.csv"  # relative paths start at the settings file's folder
    assert f"email: Value error, stream_approvers_csv {missing}: No such file or directory" in message


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("smtp_port = 587", 'smtp_port = "{secret}"'),
        GOOD.replace('password = "{secret}"', 'password = ["{secret}"]'),
        GOOD.replace('password = "{secret}"', 'pasword = "{secret}"'),
        GOOD.replace('password = "{secret}"', 'password = "{secret}"\nsmtp_port = "x"'),
        GOOD + '\n[versioning]\nenabled = true\nsecret_access_key = "{secret}"\naccess_key_id = 7\n',
        GOOD.replace('password = "{secret}"', 'password = "{secret}\nbroken'),
        GOOD.replace('username = "promoter"', "username = 12"),
    ],
    ids=[
        "secret as a wrong-typed value",
        "password of the wrong type",
        "misspelt password key",
        "other field wrong next to the password",
        "s3 secret with bad key id",
        "broken TOML in the password line",
        "wrong username next to the password",
    ],
)
def test_a_secret_never_appears_in_the_error(tmp_path: Path, text: str) -> None:
    """Whatever fails, the message names file and field but never repeats a rejected value."""
    message = load_error(write(tmp_path, text))

    assert SECRET not in message


def test_versioning_enabled_without_a_bucket_fails(tmp_path: Path) -> None:
    """Versioning on with no bucket is refused at load, naming the versioning section."""
    message = load_error(write(tmp_path, GOOD + "\n[versioning]\nenabled = true\n"))

    assert "versioning: Value error, bucket is required when versioning is enabled" in message


def test_s3_keys_come_in_pairs(tmp_path: Path) -> None:
    """An access key id without its secret (or the reverse) is refused: boto3 would pick other credentials."""
    message = load_error(write(tmp_path, GOOD + '\n[versioning]\naccess_key_id = "AKIA1"\n'))

    assert "versioning: Value error, set both access_key_id and secret_access_key" in message


@pytest.mark.parametrize("prefix", ["../escape/", "a//b/", "a\\\\b/"])
def test_s3_prefix_must_be_a_plain_folder(tmp_path: Path, prefix: str) -> None:
    """A prefix with "..", empty segments or backslashes is refused at load."""
    message = load_error(write(tmp_path, GOOD + f'\n[versioning]\nprefix = "{prefix}"\n'))

    assert "versioning.prefix" in message


def test_s3_prefix_is_normalised(tmp_path: Path) -> None:
    """A prefix without a trailing slash (or with a leading one) becomes a folder path."""
    settings = load_settings(write(tmp_path, GOOD + '\n[versioning]\nprefix = "/qlik/apps"\n'))

    assert settings.versioning.prefix == "qlik/apps/"


def test_password_needs_a_username_and_tls(tmp_path: Path) -> None:
    """A password is only ever sent after a username, over starttls or tls."""
    no_user = load_error(write(tmp_path, GOOD.replace('username = "promoter"', "")))
    plain = load_error(write(tmp_path, GOOD + 'security = "none"\n'))

    assert "email: Value error, password is set but username is not" in no_user
    assert "security = starttls or tls" in plain


def test_source_is_not_a_target_alias(tmp_path: Path) -> None:
    """A target site called "source" would be ambiguous with the source site: refused."""
    message = load_error(write(tmp_path, GOOD + '\n[target_sites.source]\nhost = "x"\n'))

    assert "target_sites" in message and "'source'" in message


def test_unknown_site_lists_the_configured_ones(tmp_path: Path) -> None:
    """Asking for a site that is not configured names the ones that are."""
    settings = load_settings(write(tmp_path, GOOD))

    with pytest.raises(SettingsError, match="unknown site 'qa'; configured: test, prod"):
        settings.site("qa")


def test_example_file_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """qs-promoter.example.toml loads as it is shipped."""
    monkeypatch.chdir(tmp_path)  # relative paths in the example must not need to exist

    settings = load_settings(EXAMPLE)

    assert settings.source_site.host == "qlik-dev"
    assert "test" in settings.target_sites


def test_example_file_documents_every_field() -> None:
    """Every field of every settings section appears in the example (set or commented out) in its section."""
    documented = _documented_keys(EXAMPLE.read_text(encoding="utf-8"))

    by_model: dict[type[BaseModel], set[str]] = {}  # [source_site] documents every site's keys
    for section, model in _sections(Settings):
        by_model.setdefault(model, set()).update(documented.get(section, set()))

    missing = [
        f"{model.__name__}.{name}"
        for model, keys in by_model.items()
        for name in model.model_fields
        if name not in keys
    ]

    assert missing == []


def _sections(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Each settings section as (TOML table path, model); dicts of sections appear as "<table>.*"."""
    found = [(path, model)]
    for name, field in model.model_fields.items():
        target, sub = field.annotation, f"{path}.{name}" if path else name
        if typing.get_origin(target) is dict and _is_model(typing.get_args(target)[1]):
            found += _sections(typing.get_args(target)[1], f"{sub}.*")
        elif _is_model(target):
            found += _sections(target, sub)
    return found


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per table, counting commented-out lines ("# key = ...") and sub-tables ([email.stream_approvers]).

    Every [target_sites.<alias>] counts as the table "target_sites.*".
    """
    keys: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^#?\s*\[([A-Za-z0-9_.]+)\]\s*$", line)
        if header:
            section = re.sub(r"^target_sites\.[^.]+", "target_sites.*", header[1])
            parent, _, name = header[1].rpartition(".")
            parent, name = ("", "target_sites") if parent == "target_sites" else (parent, name)
            keys.setdefault(parent, set()).add(name)
            continue
        key = re.match(r"^#?\s*([a-z0-9_]+)\s*=", line)
        if key:
            keys.setdefault(section, set()).add(key[1])
    return keys


def test_repr_shows_neither_the_ledger_password_nor_the_s3_access_key(tmp_path: Path) -> None:
    """repr() and str() of the settings (as a log line or a traceback would show them) hide the
    password inside ledger_url and the S3 access key id; writing the settings file still keeps both."""
    password, key_id = "Ledger-Pw-7vQ2", "AKIAREPRTEST0001"
    text = f'ledger_url = "postgresql+psycopg://qsp:{password}@db.example/qsp"\n' + GOOD
    text += f'\n[versioning]\naccess_key_id = "{key_id}"\nsecret_access_key = "{{secret}}"\n'
    settings = load_settings(write(tmp_path, text))

    shown = [repr(settings), str(settings), repr(settings.versioning), settings.model_dump_json()]
    again = load_settings(write_settings(settings, tmp_path / "again.toml"))

    assert [t for t in shown if password in t or key_id in t or SECRET in t] == []
    assert again.ledger_url.get_secret_value() == f"postgresql+psycopg://qsp:{password}@db.example/qsp"
    assert again.versioning.access_key_id is not None
    assert again.versioning.access_key_id.get_secret_value() == key_id


def test_an_s3_endpoint_with_credentials_in_it_is_refused(tmp_path: Path) -> None:
    """user:password@ in versioning.endpoint_url would be printed wherever the endpoint is shown (and
    boto3 does not use it): refused at load, pointing at the key fields, without the password."""
    url = f"https://minio:{SECRET}@s3.example:9000"

    message = load_error(write(tmp_path, GOOD + f'\n[versioning]\nendpoint_url = "{url}"\n'))

    assert "versioning.endpoint_url" in message and "access_key_id/secret_access_key" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "weak",
    ["a" * 16, "a" * 40, "Ab1-" * 8, "short-secret", "almost-long-enough-0123456789ab"],
    ids=["16 x a", "40 x a", "a word repeated", "12 characters", "31 characters"],
)
def test_a_weak_webhook_secret_is_refused_at_load(tmp_path: Path, weak: str) -> None:
    """A non-empty webhook.secret shorter than 32 characters or made of one piece repeated is refused at
    load with the field named and how to generate one, never the value; a random one (and none at all,
    for a site without the webhook) loads."""
    strong = "Zq4-Lm9_Tx2.Rb7~Wc5-Hd8_Ny3.Kf6~"

    message = load_error(write(tmp_path, GOOD + f'\n[webhook]\nsecret = "{weak}"\n'))

    assert "webhook.secret" in message and "secrets.token_urlsafe(32)" in message
    assert weak not in message
    assert load_settings(write(tmp_path, GOOD + f'\n[webhook]\nsecret = "{strong}"\n')).webhook.secret
    assert load_settings(write(tmp_path, GOOD)).webhook.secret.get_secret_value() == ""


# -- current_settings: what flows and tasks read at every step ------------------------------------


def rewrite_keeping_the_time(path: Path, text: str) -> None:
    """Rewrite ``path`` and give it back its modification time, as a quick rewrite can look."""
    before = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_current_settings_are_parsed_again_only_when_the_file_changes(tmp_path: Path) -> None:
    """The same file gives the same object, read as load_settings reads it; a rewrite of the same
    length within the same modification time is seen at the next call."""
    path = write(tmp_path, GOOD)

    first = current_settings(path)

    assert current_settings(path) is first
    assert first.model_dump() == load_settings(path).model_dump()
    rewrite_keeping_the_time(path, path.read_text(encoding="utf-8").replace("qlik-dev", "qlik-abc"))
    assert current_settings(path).source_site.host == "qlik-abc"


def test_current_settings_follow_the_qsp_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A QSP_ variable set, changed or removed is in force at the next call; QSP_CONFIG names the file."""
    monkeypatch.setenv("QSP_CONFIG", str(write(tmp_path, GOOD)))
    assert current_settings().source_site.host == "qlik-dev"

    monkeypatch.setenv("QSP_SOURCE_SITE__HOST", "qlik-env")
    assert current_settings().source_site.host == "qlik-env"
    monkeypatch.setenv("QSP_SOURCE_SITE__HOST", "qlik-env2")
    assert current_settings().source_site.host == "qlik-env2"
    monkeypatch.delenv("QSP_SOURCE_SITE__HOST")
    assert current_settings().source_site.host == "qlik-dev"


def test_a_broken_file_fails_at_every_call_until_it_is_fixed(tmp_path: Path) -> None:
    """Settings that loaded once are not handed out after the file broke, and a failure is not kept."""
    path = write(tmp_path, GOOD)
    current_settings(path)
    path.write_text(GOOD + "\n[source_site\n", encoding="utf-8")

    for _ in range(2):
        with pytest.raises(SettingsError, match="not valid TOML"):
            current_settings(path)
    path.unlink()
    with pytest.raises(SettingsError, match="settings file not found"):
        current_settings(path)
    write(tmp_path, GOOD)
    assert current_settings(path).source_site.host == "qlik-dev"


def test_an_edited_approver_csv_is_seen_at_the_next_call(tmp_path: Path) -> None:
    """The approver CSV the file names is read while parsing: editing it alone counts as a change."""
    csv = tmp_path / "approvers.csv"
    csv.write_text("StreamID, ApprovalEmailAddress\nabc, one@acme.example\n", encoding="utf-8")
    path = write(tmp_path, GOOD + 'stream_approvers_csv = "approvers.csv"\n')
    assert current_settings(path).email.approvers_for("abc") == ["one@acme.example"]

    rewrite_keeping_the_time(csv, "StreamID, ApprovalEmailAddress\nabc, two@acme.example\n")

    assert current_settings(path).email.approvers_for("abc") == ["two@acme.example"]


def test_threads_asking_at_once_share_one_parse(tmp_path: Path) -> None:
    """Runs that start together (the executor's threads) get one Settings object, parsed once."""
    path = write(tmp_path, GOOD)
    start = threading.Barrier(8)

    def ask() -> Settings:
        start.wait()
        return current_settings(path)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: ask(), range(8)))

    assert len({id(settings) for settings in answers}) == 1
