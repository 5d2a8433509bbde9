"""Settings: one pydantic-settings model from a TOML file plus QSP_ environment overrides.

``load_settings(path)`` is the only way in; it names the file and the field on every failure.
Settings are passed around as arguments: there is no module-level instance. Flows and tasks ask
``current_settings()``, which parses the file again only when it (or a QSP_ variable) changed.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import threading
import tomllib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path, PurePath
from typing import Annotated, ClassVar, Literal, TypeVar, get_args, get_origin
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from promoter.errors import SettingsError

PurePathT = TypeVar("PurePathT", bound=PurePath)

ENV_PREFIX = "QSP_"
CONFIG_ENV = "QSP_CONFIG"
DEFAULT_CONFIG = Path("qs-promoter.toml")


class Section(BaseModel):
    """A settings section: unknown keys are typos, and typos are errors."""

    model_config = ConfigDict(extra="forbid")


class SiteSettings(Section):
    """How to reach one Qlik site's QRS on port 4242 with the certificates exported from its QMC."""

    host: str = Field(description="Central node host name as in its server certificate (short name).")
    port: int = Field(4242, ge=1, le=65535, description="QRS port (certificates are only accepted on 4242).")
    cert_dir: Path | None = Field(
        None, description="Folder with client.pem, client_key.pem, root.pem; default certs/<site name>."
    )
    user_directory: str = Field("INTERNAL", description="X-Qlik-User directory the calls run as.")
    user_id: str = Field("sa_api", description="X-Qlik-User user id the calls run as.")
    verify_tls: bool = Field(True, description="Verify the server certificate against root.pem.")
    public_fqdn: str | None = Field(
        None, description="Host name users open in the browser, used in links https://FQDN/sense/app/ID."
    )
    timeout_seconds: float = Field(30.0, gt=0, description="Connect/read timeout of one QRS call.")
    transfer_timeout_seconds: float = Field(
        3600.0, gt=0, description="Read timeout while an app file is downloaded or uploaded."
    )
    max_connections: int = Field(8, ge=1, le=100, description="Connections kept open to this site.")

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def hub_link(self, app_id: object) -> str:
        return f"https://{self.public_fqdn or self.host}/sense/app/{app_id}"


class PropertyNames(Section):
    """Names of the custom properties and the tag, as created in the source site's QMC."""

    promote_to_server: str = "PromoteToServer"
    promote_to_stream: str = "PromoteToStream"
    promotion_approval: str = "PromotionApproval"
    promotion_s3_versioning: str = "PromotionS3Versioning"
    promotion_unpublish: str = "PromotionUnpublish"
    promote_on_reload: str = "PromoteOnReload"
    email_alert_on_publish_to: str = "EmailAlertOnPublishTo"
    can_promote: str = "CanPromote"
    can_promote_from: str = "CanPromoteFrom"
    can_promote_group: str = "CanPromoteGroup"
    reload_tag: str = Field("AutoPromoteOnReload", description="Tag put on apps promoted on every reload.")

    def promotion_properties(self) -> tuple[str, ...]:
        """The app properties that a finished approval strips off."""
        return (
            self.promote_to_server,
            self.promote_to_stream,
            self.promotion_approval,
            self.promotion_s3_versioning,
            self.promotion_unpublish,
        )


class EmailSettings(Section):
    enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="none, starttls (upgrade on the plain port) or tls (implicit TLS, often 465)."
    )
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "qs-promoter@localhost"
    ca_file: Path | None = Field(None, description="CA bundle for the SMTP server certificate.")
    timeout_seconds: float = Field(30.0, gt=0)
    stream_approvers: dict[str, list[str]] = Field(
        default_factory=dict, description="Stream id -> approver email addresses."
    )
    stream_approvers_csv: Path | None = Field(
        None, description="The original's CSV (StreamID, ApprovalEmailAddress), merged with stream_approvers."
    )
    owner_email_attribute: str = Field("email", description="User attribute holding an email address.")
    copy_approver: bool = Field(
        False,
        description="Also send the approver the approval, denial, intended-targets and results emails"
        " (the original mails the owner only).",
    )
    subjects: Literal["qs-promoter", "original"] = Field(
        "qs-promoter",
        description="Subject wording: qs-promoter's, or the original's (for mail rules written for it).",
    )
    intended_targets_wait_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="The intended-targets email waits this long: a promotion done by then sends one results"
        " email that lists the requested targets too; a slower one gets both emails. 0: always both.",
    )

    @field_validator("sender")
    @classmethod
    def _sender_is_one_address(cls, sender: str) -> str:
        # Checked here, once: a bad sender would otherwise fail every email (and its promotion).
        from promoter.addresses import parse_address

        parse_address(sender)  # ValueError: pydantic names the field
        return sender

    @model_validator(mode="after")
    def _merge_csv(self) -> EmailSettings:
        # Stream ids are GUIDs: QRS writes them in lower case, admins may paste them in upper case.
        rows = [(k, a) for k, addresses in self.stream_approvers.items() for a in addresses]
        if self.stream_approvers_csv is not None:
            try:
                rows += read_approver_csv(self.stream_approvers_csv)
            except OSError as exc:  # a ValueError names the field; a bare OSError would not
                raise ValueError(
                    f"stream_approvers_csv {self.stream_approvers_csv}: {exc.strerror or exc}"
                ) from None
        merged: dict[str, list[str]] = {}
        for stream_id, address in rows:
            addresses = merged.setdefault(stream_id.strip().lower(), [])
            if address not in addresses:
                addresses.append(address)
        self.stream_approvers = merged
        return self

    @model_validator(mode="after")
    def _login_needs_tls(self) -> EmailSettings:
        if self.password is not None and not self.username:
            raise ValueError("password is set but username is not")
        if self.username and self.security == "none":
            raise ValueError("username/password need security = starttls or tls (never sent in clear)")
        return self

    def approvers_for(self, stream_id: object) -> list[str]:
        """Approver addresses for a stream id (any letter case), from the settings and the CSV."""
        return list(self.stream_approvers.get(str(stream_id).strip().lower(), []))


class VersioningSettings(Section):
    enabled: bool = False
    auto_version_all: bool = Field(
        False, description="Version every promotion without PromotionS3Versioning."
    )
    bucket: str = ""
    prefix: str = "qs-promoter/"
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint; empty for AWS.")
    region: str | None = None
    access_key_id: SecretStr | None = Field(None, description="Empty: boto3's default chain (IAM role, env).")
    secret_access_key: SecretStr | None = None
    backup_before_overwrite: bool = Field(
        True, description="Store each target app in S3 before replacing it."
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, prefix: str) -> str:
        return normalise_s3_prefix(prefix)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_without_credentials(cls, url: str | None) -> str | None:
        # boto3 signs with the keys and never uses user:password@ in the URL; one written there
        # would only show up wherever the endpoint is printed.
        if url and _has_credentials(url):
            raise ValueError("put the keys in access_key_id/secret_access_key, not in the URL")
        return url

    @model_validator(mode="after")
    def _bucket_when_enabled(self) -> VersioningSettings:
        if self.enabled and not self.bucket:
            raise ValueError("bucket is required when versioning is enabled")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither (default chain)")
        return self


class OverwriteSettings(Section):
    """How an Overwrite treats the target apps it replaces."""

    drift: Literal["hold", "warn", "ignore"] = Field(
        "hold",
        description="A target app changed since qs-promoter placed it (modifiedDate or fileSize): hold "
        "the site until a promotion with force, warn and replace it, or ignore the change.",
    )


class UnpublishSettings(Section):
    auto: bool = Field(
        True, description="Unpublish after every approve/deny; false: only where PromotionUnpublish is True."
    )


class ReloadSettings(Section):
    enabled: bool = Field(False, description="Promote apps tagged for promote-on-reload after each reload.")


class AuthorizationSettings(Section):
    """Who may ask for a promotion, a denial or a promotion on reload (checked again on our side)."""

    enabled: bool = Field(
        True,
        description="Check CanPromote / CanPromoteFrom / CanPromoteGroup of whoever set Approve, Deny "
        "or PromoteOnReload before acting on it.",
    )
    separation_of_duties: bool = Field(
        False,
        # The name before issue 8, still read so that existing settings files keep working.
        validation_alias=AliasChoices("separation_of_duties", "approver_must_differ_from_owner"),
        description="Refuse an approval (or PromoteOnReload) set by the app's own owner.",
    )


IPNetwork = Annotated[IPv4Network | IPv6Network, Field()]
# 32 characters of a random URL-safe secret carry about 190 bits, well above 128 bits.
WEBHOOK_SECRET_MIN_LENGTH = 32
HOW_TO_GENERATE = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


class WebhookSettings(Section):
    host: str = Field("0.0.0.0", description="Address the webhook binds.")  # noqa: S104 - QRS calls in
    port: int = Field(8787, ge=1, le=65535)
    public_base_url: str = Field(
        "http://127.0.0.1:8787", description="Base URL the QRS calls back (reachable from the Qlik server)."
    )
    secret: SecretStr = Field(
        SecretStr(""),
        description=f"Shared secret in the callback URL: {WEBHOOK_SECRET_MIN_LENGTH}+ random characters.",
    )
    allowed_networks: list[IPNetwork] = Field(
        default_factory=list, description="Source networks allowed to post; empty allows any."
    )
    monitoring_networks: list[IPNetwork] = Field(
        default_factory=lambda: [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")],
        description="Besides allowed_networks, these may read /healthz and the API docs (never post); "
        "this machine by default.",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_changes_per_notification: int = Field(
        500, ge=1, description="A notification with more changes is refused (413)."
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Connections open at once (never more than half the process's file limit); at the "
        "limit the one waiting longest for its request is closed to make room.",
    )
    request_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="A caller must send each whole request (headers and body) within this time, or "
        "its connection is closed; QRS needs milliseconds.",
    )
    outbox_path: Path = Field(Path("var/outbox.db"), description="SQLite file of the durable outbox.")
    tls_cert: Path | None = Field(
        None, description="Serve HTTPS with this certificate (PEM); public_base_url must then be https://."
    )
    tls_key: Path | None = Field(None, description="Private key of tls_cert (PEM, without a password).")
    tls_ca: Path | None = Field(
        None,
        description="CA certificate (PEM) that signed tls_cert, as the Qlik server trusts it "
        "(a self-signed certificate is its own CA); empty: the system's CAs.",
    )

    @model_validator(mode="after")
    def _tls_is_complete(self) -> WebhookSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither (plain HTTP)")
        if self.tls_cert is not None and not self.public_base_url.lower().startswith("https://"):
            raise ValueError("tls_cert is set, so public_base_url must start with https://")
        return self

    @field_validator("secret")
    @classmethod
    def _secret_is_strong(cls, secret: SecretStr) -> SecretStr:
        # Empty means "no webhook here" (`webhook serve` and `up` refuse to start without one);
        # anything else is the only thing between the internet and a promotion: never weak.
        problem = weak_secret_problem(secret.get_secret_value())
        if problem:
            raise ValueError(f"{problem}; {HOW_TO_GENERATE}")
        return secret


class PrefectSettings(Section):
    site_concurrency: int = Field(2, ge=1, description="Promotions running against one site at once.")
    work_pool: str = "qs-promoter"
    worker_limit: int | None = Field(
        None, ge=1, description="Flow runs one worker runs at once (prefect worker --limit); None: no limit."
    )


class Settings(BaseSettings):
    """Everything qs-promoter needs; see qs-promoter.example.toml for a commented example."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")
    toml_path: ClassVar[Path | None] = None

    source_site: SiteSettings
    target_sites: dict[str, SiteSettings] = Field(default_factory=dict)
    cert_root: Path = Field(Path("certs"), description="Where certs/<site>/ folders live.")
    properties: PropertyNames = Field(default_factory=PropertyNames)
    email: EmailSettings = Field(default_factory=EmailSettings)
    versioning: VersioningSettings = Field(default_factory=VersioningSettings)
    overwrite: OverwriteSettings = Field(default_factory=OverwriteSettings)
    unpublish: UnpublishSettings = Field(default_factory=UnpublishSettings)
    promote_on_reload: ReloadSettings = Field(default_factory=ReloadSettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    ledger_url: SecretStr = Field(
        SecretStr("sqlite:///var/ledger.db"),
        description="SQLAlchemy URL of the ledger (secret: a PostgreSQL URL carries its password).",
    )
    work_dir: Path = Field(
        Path("var/work"),
        description="Where exported app files wait while a promotion runs (needs room for the largest app).",
    )

    SOURCE: ClassVar[str] = "source"

    @model_validator(mode="before")
    @classmethod
    def _approver_csv_from_settings_folder(cls, data: object) -> object:
        # The CSV is read while the email section is validated, before _from_settings_folder runs.
        base = cls.settings_folder()
        if base is None or not isinstance(data, dict) or not isinstance(data.get("email"), dict):
            return data
        email = data["email"]
        csv_path = email.get("stream_approvers_csv")
        if not isinstance(csv_path, str | Path) or not str(csv_path):
            return data
        return {**data, "email": {**email, "stream_approvers_csv": under(base, Path(csv_path))}}

    @model_validator(mode="after")
    def _from_settings_folder(self) -> Settings:
        # Every process (up, executor, flow runs after their change into the project folder,
        # webhook, CLI) then finds the same ledger, outbox, work folder and certificates, whatever
        # folder it was started in.
        base = self.settings_folder()
        if base is None:
            return self  # no settings file: relative paths stay relative to the current folder
        self.cert_root = under(base, self.cert_root)
        self.work_dir = under(base, self.work_dir)
        self.ledger_url = SecretStr(sqlite_url_under(base, self.ledger_url.get_secret_value()))
        for site in (self.source_site, *self.target_sites.values()):
            site.cert_dir = site.cert_dir and under(base, site.cert_dir)
        webhook = self.webhook
        webhook.outbox_path = under(base, webhook.outbox_path)
        webhook.tls_cert = webhook.tls_cert and under(base, webhook.tls_cert)
        webhook.tls_key = webhook.tls_key and under(base, webhook.tls_key)
        webhook.tls_ca = webhook.tls_ca and under(base, webhook.tls_ca)
        self.email.ca_file = self.email.ca_file and under(base, self.email.ca_file)
        return self

    @classmethod
    def settings_folder(cls) -> Path | None:
        """The folder relative paths resolve against: the settings file's, or None without a file."""
        return None if cls.toml_path is None else Path(os.path.abspath(cls.toml_path)).parent

    def ledger_file(self) -> Path | None:
        """The ledger's SQLite file as an absolute path; None for a server database or :memory:."""
        database = sqlite_file(self.ledger_url.get_secret_value())
        return None if database is None else Path(os.path.abspath(database))

    def state_paths(self) -> dict[str, str]:
        """Where this installation keeps its state, as absolute paths (the ledger URL of a server
        database without its password), for doctor and the start-up logs."""
        url = self.ledger_url.get_secret_value()
        ledger = self.ledger_file()
        return {
            "ledger": str(ledger) if ledger else url_without_password(url),
            "outbox": os.path.abspath(self.webhook.outbox_path),
            "work folder": os.path.abspath(self.work_dir),
            "certificates": os.path.abspath(self.cert_root),
        }

    def state_line(self, **more: str) -> str:
        """One log line with the absolute state paths and what relative paths resolved against."""
        base = self.settings_folder()
        origin = (
            f"relative paths from the settings file's folder {base}"
            if base is not None
            else f"no settings file: relative paths from the current folder {Path.cwd()}"
        )
        places = {**self.state_paths(), **more}
        return "state: " + ", ".join(f"{name} {place}" for name, place in places.items()) + f" ({origin})"

    @field_validator("target_sites")
    @classmethod
    def _aliases_are_plain(cls, sites: dict[str, SiteSettings]) -> dict[str, SiteSettings]:
        for alias in sites:
            if not alias or alias.strip() != alias or " - " in alias or alias == cls.SOURCE:
                raise ValueError(
                    f"site alias {alias!r} must be non-empty, trimmed, not 'source', without ' - '"
                )
        return sites

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if cls.toml_path is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path),)
        return sources

    def site(self, name: str) -> SiteSettings:
        """The source site (``"source"``) or a target site by alias."""
        if name == self.SOURCE:
            return self.source_site
        try:
            return self.target_sites[name]
        except KeyError:
            raise SettingsError(
                f"unknown site {name!r}; configured: {', '.join(self.target_sites)}"
            ) from None

    def cert_dir(self, name: str) -> Path:
        site = self.site(name)
        return site.cert_dir if site.cert_dir is not None else self.cert_root / name


def read_approver_csv(path: Path) -> list[tuple[str, str]]:
    """Rows of the original's ApprovalStreamsToEmailAddressMap.csv (header StreamID, ApprovalEmailAddress)."""
    rows: list[tuple[str, str]] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or (number == 1 and cells[0].lower() == "streamid"):
                continue
            if len(cells) < 2 or not cells[0] or "@" not in cells[1]:
                raise ValueError(f"{path}:{number}: expected 'StreamID, email address'")
            rows.append((cells[0].lower(), cells[1]))
    return rows


def normalise_s3_prefix(prefix: str) -> str:
    """An S3 key prefix as a plain folder path: "" or "a/b/", never "..", "//", a leading "/" or "\\"."""
    prefix = prefix.strip().lstrip("/")
    if not prefix:
        return ""
    segments = prefix.rstrip("/").split("/")
    for segment in segments:
        control = any(ord(ch) < 32 or ord(ch) == 127 for ch in segment)
        if segment in ("", ".", "..") or "\\" in segment or control:
            raise ValueError(f"prefix {prefix!r}: use plain folder names separated by '/'")
    return "/".join(segments) + "/"


def weak_secret_problem(secret: str) -> str | None:
    """Why a non-empty webhook secret is too easy to guess, or None (the value itself is never named)."""
    if not secret:
        return None
    if len(secret) < WEBHOOK_SECRET_MIN_LENGTH:
        return f"must be at least {WEBHOOK_SECRET_MIN_LENGTH} characters (it has {len(secret)})"
    if secret in (secret + secret)[1:-1]:  # "aaaa...", "abab...", "password" * 4: one piece repeated
        return "must be random, not one character or word repeated"
    return None


def url_without_password(url: str) -> str:
    """The URL with its password (if any) shown as ***, for messages: host and database are no secret."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a URL that cannot be read)"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def hide_url_password(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with the password of ``url`` replaced by ***."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, "***")
    return text


def _has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.username is not None or parts.password is not None
    except ValueError:
        return False  # not a URL at all: boto3 refuses it and says so


def under(base: PurePathT, path: PurePathT) -> PurePathT:
    """``path`` if absolute, else ``base / path`` (``base`` is absolute); "~" is the home folder.

    Not resolve(): a folder reached through a link keeps the name the admin gave it. On Windows
    ``\\var`` takes the drive of ``base``; ``C:var`` on another drive than ``base`` stays as it is
    (write ``C:\\var``).
    """
    if isinstance(path, Path):
        path = path.expanduser()
    return path if path.is_absolute() else base / path


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (relative as written), or None for another database or :memory:."""
    if not url.lower().startswith("sqlite"):
        return None  # cheap test first: SQLAlchemy is imported only for SQLite URLs
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # the ledger names the problem when it opens the URL
    database = parsed.database
    uri = str(parsed.query.get("uri", "")).lower() in ("true", "1")
    if parsed.get_backend_name() != "sqlite" or uri or database in (None, "", ":memory:"):
        return None
    return Path(database)


def sqlite_url_under(base: Path, url: str) -> str:
    """A SQLite URL with a relative file made absolute under ``base``; any other URL unchanged."""
    database = sqlite_file(url)
    if database is None or database.is_absolute():
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=str(under(base, database))).render_as_string(hide_password=False)


def config_path(explicit: Path | None = None) -> Path:
    """--config, else QSP_CONFIG, else ./qs-promoter.toml."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings file (plus QSP_ overrides); a bad file raises SettingsError naming file and field."""
    path = config_path(path)
    if not path.is_file():  # pydantic-settings would silently skip a missing file
        raise SettingsError(f"{path}: settings file not found")
    try:
        with path.open("rb") as handle:
            tomllib.load(handle)  # a readable message for broken TOML before pydantic wraps it
        file_settings = type("FileSettings", (Settings,), {"toml_path": path})
        return file_settings()
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise SettingsError(describe_validation(path, exc)) from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from None


# What a parse of one settings file depended on: its bytes and the QSP_ variables (the bytes of
# the approver CSV it names are kept beside them). Equal inputs give equal settings.
_Inputs = tuple[bytes | None, tuple[tuple[str, str], ...]]
_parsed: dict[str, tuple[_Inputs, Settings, tuple[Path, bytes | None] | None]] = {}
_parsing = threading.Lock()


def current_settings(path: Path | None = None) -> Settings:
    """The settings as ``load_settings(path)`` reads them now, parsed again only when an input changed.

    Tasks and flows call this at every step: each call reads the file's bytes (small; a
    modification time can miss a quick rewrite) and the QSP_ variables, and returns the Settings
    parsed from the same inputs before, per process and per file. A broken file raises
    SettingsError on every call (failures are not kept).

    The object is shared by every caller in the process: treat it as read-only (nothing assigns to
    loaded settings; use ``model_copy(update=...)`` for a variant). It is not a frozen model because
    its validators resolve relative paths in place while it is built.
    """
    path = config_path(path)
    # abspath, as settings_folder(): the folder relative paths resolve against is part of the result.
    where = os.path.abspath(path)
    with _parsing:  # one parse at a time: runs that start together share one
        inputs = (_read_bytes(Path(where)), _qsp_environment())
        cached = _parsed.get(where)
        if cached is not None and cached[0] == inputs and _unchanged(cached[2]):
            return cached[1]
        _parsed.pop(where, None)
        settings = load_settings(path)
        if _read_bytes(Path(where)) != inputs[0]:
            return settings  # rewritten while it was parsed: which version was read is unknown
        csv_path = settings.email.stream_approvers_csv
        approvers = None if csv_path is None else (csv_path, _read_bytes(csv_path))
        _parsed[where] = (inputs, settings, approvers)
        return settings


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # load_settings names the problem


def _qsp_environment() -> tuple[tuple[str, str], ...]:
    # pydantic-settings matches variable names in any letter case.
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)))


def _unchanged(file: tuple[Path, bytes | None] | None) -> bool:
    return file is None or _read_bytes(file[0]) == file[1]


def describe_validation(path: Path, exc: ValidationError) -> str:
    """One line per problem: file: field.path: reason (never the rejected value: it may be a secret).

    A value that came from a QSP_ variable is blamed on that variable, not on the file.
    """
    lines = []
    environment = {name.upper() for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        text = ""
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        where = ".".join(loc) or "(top level)"
        source, in_file = str(path), True
        for depth in range(len(loc), 0, -1):  # the variable for the field, or for a section above it
            name = ENV_PREFIX + "__".join(loc[:depth]).upper()
            if name in environment:
                source, in_file = f"environment variable {name}", False
                break
        line = toml_line(text, loc) if in_file and loc else None
        detail = f"{error['msg']}" + (f" (line {line})" if line else "")
        if error["type"] == "extra_forbidden":
            nearest = nearest_field(loc)
            detail += f"; did you mean {nearest!r}?" if nearest else "; not a setting"
        lines.append(f"{source}: {where}: {detail}")
    return "\n".join(lines)


_TOML_KEY = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*(\.|=|\]|$)""")


def _toml_keys(text: str) -> tuple[list[str], str] | None:
    """The dotted key a line starts with and what ends it ("=" or "]"), quotes removed; else None."""
    parts, position = [], 0
    while True:
        match = _TOML_KEY.match(text, position)
        if match is None:
            return None
        parts.append(match.group(1).strip("\"'"))
        position = match.end()
        if match.group(2) != ".":
            return parts, match.group(2)


def toml_line(text: str, loc: list[str]) -> int | None:
    """The number of the line of ``text`` (a TOML document) that sets ``loc``, or a table or key
    under it; None when no line does (an inline table, a multi-line value)."""
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            found = _toml_keys(stripped.lstrip("["))
            if found is None or found[1] != "]":
                continue
            table = found[0]
            path = table
        else:
            found = _toml_keys(stripped)
            if found is None or found[1] != "=":
                continue
            path = table + found[0]
        if path[: len(loc)] == loc:
            return number
    return None


def nearest_field(loc: list[str]) -> str | None:
    """The setting a misspelt ``loc`` most likely meant, among the fields of its section."""
    model: type[BaseModel] | None = Settings
    skip_key = False
    for part in loc[:-1]:
        if skip_key:  # a site alias or another key of a table of sections
            skip_key = False
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        model, skip_key = _section_of(field.annotation)
    if model is None or skip_key:
        return None
    names = list(model.model_fields)
    match = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6) if loc else []
    return match[0] if match else None


def _section_of(annotation: object) -> tuple[type[BaseModel] | None, bool]:
    """The section model an annotation holds, and whether a key (dict[str, Section]) comes first."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict:
        return _section_of(get_args(annotation)[1])[0], True
    for arg in get_args(annotation):  # Section | None
        model, keyed = _section_of(arg)
        if model is not None:
            return model, keyed
    return None, False


def settings_document(settings: Settings) -> dict[str, object]:
    """The settings as plain data, secrets included: only for writing a settings file."""

    def reveal(value: object) -> object:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [reveal(v) for v in value]
        return value

    raw = {name: reveal(getattr(settings, name)) for name in type(settings).model_fields}
    return json.loads(json.dumps(raw, default=_plain))


def _plain(value: object) -> object:
    if isinstance(value, BaseModel):
        return {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)  # Path, IP networks


def write_settings(settings: Settings, path: Path) -> Path:
    """Write a settings file that load_settings() reads back (the demo and tests make their own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(settings_document(settings)), encoding="utf-8")
    return path


def to_toml(document: dict[str, object], prefix: str = "") -> str:
    """A small TOML writer for settings documents: tables, strings, numbers, booleans and lists."""
    scalars, tables = [], []
    for key, value in document.items():
        if value is None:
            continue  # TOML has no null: leaving the key out means "the default"
        name = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
        if isinstance(value, dict):
            tables.append((f"{prefix}{name}", value))
        else:
            scalars.append(f"{name} = {_toml_value(value)}")
    text = "\n".join(scalars) + ("\n" if scalars else "")
    for table_name, table in tables:
        text += f"\n[{table_name}]\n" + to_toml(table, f"{table_name}.")
    return text


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    # JSON string escapes are valid TOML basic-string escapes; raw UTF-8 is fine in both.
    return json.dumps(str(value), ensure_ascii=False)
