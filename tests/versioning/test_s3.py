"""App versions in a real S3 endpoint (moto server): versions, byte-identical downloads, safe keys, errors."""

from __future__ import annotations

import os
import socket
import traceback
import uuid
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig
from pydantic import SecretStr

from promoter.errors import VersioningError
from promoter.sandbox.s3 import S3Sandbox
from promoter.versioning import (
    download_version,
    ensure_bucket_versioning,
    list_versions,
    metadata_text,
    object_key,
    s3_client,
    upload_version,
)

pytestmark = pytest.mark.e2e


def app_file(tmp_path: Path, name: str, size: int = 64 * 1024) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_uploading_twice_keeps_two_versions_and_each_downloads_byte_identical(
    s3_server: S3Sandbox, tmp_path: Path
) -> None:
    """Two promotions of one app give two version ids of one key; the older one comes back byte for byte."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    app_id = uuid.uuid4()
    first, second = app_file(tmp_path, "v1.qvf"), app_file(tmp_path, "v2.qvf")

    v1 = upload_version(s3, settings, first, app_id, "Sales KPIs", {"approver": "Mary"})
    v2 = upload_version(s3, settings, second, app_id, "Sales KPIs")
    restored = download_version(s3, settings.bucket, v1.key, v1.version_id, tmp_path / "restore" / "v1.qvf")

    assert v1.key == v2.key == object_key(settings.prefix, app_id, "Sales KPIs")
    assert v1.version_id != v2.version_id
    assert restored.read_bytes() == first.read_bytes()
    assert [(v.version_id, v.is_latest) for v in list_versions(s3, settings.bucket, v1.key)] == [
        (v2.version_id, True),
        (v1.version_id, False),
    ]


def test_a_copy_that_continues_an_app_is_one_more_version_of_the_apps_object(
    s3_server: S3Sandbox, tmp_path: Path
) -> None:
    """The owner's copy (new id, new name) stored with its lineage root lands on the root's key, so both
    approval cycles are versions of one object; the version's metadata names the copy and the root."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    root, copy = uuid.uuid4(), uuid.uuid4()

    first = upload_version(s3, settings, app_file(tmp_path, "v1.qvf"), root, "Sales")
    second = upload_version(
        s3, settings, app_file(tmp_path, "v2.qvf"), copy, "Sales 2025", root_id=root, root_name="Sales"
    )

    assert first.key == second.key == object_key(settings.prefix, root, "Sales")
    stored = {v.version_id for v in list_versions(s3, settings.bucket, first.key)}
    assert stored == {first.version_id, second.version_id}
    head = s3.head_object(Bucket=settings.bucket, Key=second.key, VersionId=second.version_id)
    assert (head["Metadata"]["app-id"], head["Metadata"]["lineage-app-id"]) == (str(copy), str(root))
    assert metadata_text(head["Metadata"]["app-name"]) == "Sales 2025"
    first_head = s3.head_object(Bucket=settings.bucket, Key=first.key, VersionId=first.version_id)
    assert "lineage-app-id" not in first_head["Metadata"]


def test_hostile_name_is_stored_under_a_safe_key_with_the_name_in_metadata(
    s3_server: S3Sandbox, tmp_path: Path
) -> None:
    """A name like "../../x" stays inside apps/<id>/; the exact name is kept (encoded) in the metadata."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    app_id = uuid.uuid4()
    name = "../../etc/passwd\r\n<b>Überblick</b> 数据"

    version = upload_version(s3, settings, app_file(tmp_path, "a.qvf"), app_id, name)

    head = s3.head_object(Bucket=settings.bucket, Key=version.key, VersionId=version.version_id)
    assert version.key.startswith(f"qs-promoter/apps/{app_id}/")
    assert ".." not in version.key.split("/")
    assert metadata_text(head["Metadata"]["app-name"]) == name
    assert head["Metadata"]["app-id"] == str(app_id)


def test_two_apps_with_the_same_name_keep_separate_versions(s3_server: S3Sandbox, tmp_path: Path) -> None:
    """Two apps both called "Sales" get different keys, and each download returns its own bytes."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    one, two = app_file(tmp_path, "one.qvf"), app_file(tmp_path, "two.qvf")

    v_one = upload_version(s3, settings, one, uuid.uuid4(), "Sales")
    v_two = upload_version(s3, settings, two, uuid.uuid4(), "Sales")

    assert v_one.key != v_two.key
    got_one = download_version(s3, settings.bucket, v_one.key, v_one.version_id, tmp_path / "got-one")
    got_two = download_version(s3, settings.bucket, v_two.key, v_two.version_id, tmp_path / "got-two")
    assert (got_one.read_bytes(), got_two.read_bytes()) == (one.read_bytes(), two.read_bytes())


def test_backup_of_a_target_app_goes_under_its_site(s3_server: S3Sandbox, tmp_path: Path) -> None:
    """A backup before overwrite is stored under backups/<site>/<target app id>/ and restores intact."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    target = uuid.uuid4()
    file = app_file(tmp_path, "target.qvf")

    backup = upload_version(s3, settings, file, target, "Sales", kind="backup", site="prod")

    assert backup.key == f"qs-promoter/backups/prod/{target}/Sales.qvf"
    restored = download_version(s3, settings.bucket, backup.key, backup.version_id, tmp_path / "r.qvf")
    assert restored.read_bytes() == file.read_bytes()


def test_large_file_goes_up_in_parts_and_comes_back_whole(s3_server: S3Sandbox, tmp_path: Path) -> None:
    """Above the multipart threshold the transfer manager uploads parts; the version is still one object."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    small_parts = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    file = app_file(tmp_path, "big.qvf", size=12 * 1024 * 1024)

    version = upload_version(s3, settings, file, uuid.uuid4(), "Big", transfer=small_parts)

    restored = download_version(
        s3, settings.bucket, version.key, version.version_id, tmp_path / "big-back.qvf", transfer=small_parts
    )
    assert version.bytes == 12 * 1024 * 1024
    assert restored.read_bytes() == file.read_bytes()


def test_bucket_without_versioning_is_refused_before_anything_is_stored(
    s3_server: S3Sandbox, tmp_path: Path
) -> None:
    """On a bucket whose versioning is off, an upload would destroy the previous copy: it is refused."""
    settings = s3_server.settings(bucket="plain-bucket")
    s3 = s3_client(settings)
    s3.create_bucket(Bucket="plain-bucket")

    with pytest.raises(VersioningError, match="versioning is not enabled"):
        upload_version(s3, settings, app_file(tmp_path, "a.qvf"), uuid.uuid4(), "Sales")

    assert s3.list_objects_v2(Bucket="plain-bucket").get("KeyCount") == 0


def test_doctor_check_passes_on_the_sandbox_bucket_and_names_a_missing_one(s3_server: S3Sandbox) -> None:
    """ensure_bucket_versioning() accepts a versioned bucket and says so when a bucket does not exist."""
    s3 = s3_client(s3_server.settings())

    ensure_bucket_versioning(s3, s3_server.bucket)
    with pytest.raises(VersioningError, match="does not exist"):
        ensure_bucket_versioning(s3, "no-such-bucket")


def test_unknown_version_is_a_clear_error(s3_server: S3Sandbox, tmp_path: Path) -> None:
    """Downloading a version that does not exist raises VersioningError naming the object."""
    settings = s3_server.settings()
    s3 = s3_client(settings)
    version = upload_version(s3, settings, app_file(tmp_path, "a.qvf"), uuid.uuid4(), "Sales")

    with pytest.raises(VersioningError, match=version.key):
        download_version(s3, settings.bucket, version.key, "no-such-version", tmp_path / "x.qvf")


def test_unreachable_endpoint_is_transient_and_never_shows_the_keys(tmp_path: Path) -> None:
    """No S3 listening: VersioningError marked transient, with neither access key nor secret in it."""
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sandbox = S3Sandbox()
    sandbox.endpoint_url = f"http://127.0.0.1:{port}"
    settings = sandbox.settings(
        access_key_id="AKIAEXAMPLEKEYID0001", secret_access_key=SecretStr("s3cr3t/Key+Value")
    )

    with pytest.raises(VersioningError) as caught:
        upload_version(s3_client(settings), settings, app_file(tmp_path, "a.qvf"), uuid.uuid4(), "Sales")

    printed = "".join(traceback.format_exception(caught.value))
    assert caught.value.transient
    assert "AKIAEXAMPLEKEYID0001" not in printed and "s3cr3t/Key+Value" not in printed
