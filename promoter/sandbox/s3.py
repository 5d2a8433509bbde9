"""A local S3 with versioning (moto's server mode) on a free loopback port, for tests and `demo`.

It speaks the real S3 protocol over HTTP, so ``promoter.versioning`` runs unchanged against it.
Credentials are dummies handed to each client (never put into ``os.environ``), and nothing
leaves the machine. moto keeps its data in process-wide memory: one S3Sandbox per process.
"""

from __future__ import annotations

import logging
import urllib.request
from types import TracebackType
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from pydantic import SecretStr

from promoter.settings import VersioningSettings

DEFAULT_BUCKET = "qs-promoter-versions"
DEFAULT_REGION = "us-east-1"
# Dummy credentials: moto accepts any; real ones must never be needed here.
ACCESS_KEY_ID = "sandbox-access-key"
SECRET_ACCESS_KEY = "sandbox-secret-key"  # noqa: S105 - a placeholder moto accepts, not a secret


class S3Sandbox:
    """moto's S3 server in a thread, with one versioned bucket; a context manager.

    ``endpoint_url``, ``client()`` and ``settings()`` describe how to reach it. ``reset()``
    empties every bucket and makes the versioned bucket again (cheap; for tests).
    """

    def __init__(
        self,
        *,
        bucket: str = DEFAULT_BUCKET,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self._host = host
        self._port = port
        self._server: Any = None
        self._session: boto3.session.Session | None = None
        self.endpoint_url = ""

    def start(self) -> S3Sandbox:
        """Start serving and create the bucket; returns self."""
        if self._server is not None:
            raise RuntimeError("the S3 sandbox is already running")
        from moto.server import ThreadedMotoServer  # heavy import: only when a sandbox starts

        # werkzeug logs every request at INFO on stderr unless the logger has a level.
        request_log = logging.getLogger("werkzeug")
        if request_log.level == logging.NOTSET:
            request_log.setLevel(logging.WARNING)
        # Port 0: werkzeug binds it and we read back the port the OS chose, so nothing races us.
        server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        try:
            self._create_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> S3Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def client(self) -> BaseClient:
        """A boto3 S3 client for this sandbox, with dummy credentials of its own."""
        if self._session is None:  # one Session: loading the S3 model again costs ~0.2 s per client
            self._session = boto3.session.Session(
                aws_access_key_id=ACCESS_KEY_ID,
                aws_secret_access_key=SECRET_ACCESS_KEY,
                region_name=self.region,
            )
        return self._session.client(
            "s3", endpoint_url=self.endpoint_url, config=Config(s3={"addressing_style": "path"})
        )

    def settings(self, **overrides: Any) -> VersioningSettings:
        """VersioningSettings that point qs-promoter at this sandbox (enabled, with its bucket)."""
        values: dict[str, Any] = {
            "enabled": True,
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SecretStr(SECRET_ACCESS_KEY),
        }
        return VersioningSettings(**{**values, **overrides})

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API), then make the versioned bucket again."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with direct.open(request, timeout=10) as answer:
            answer.read()
        self._create_bucket()

    def _create_bucket(self) -> None:
        s3 = self.client()
        try:
            if self.region == DEFAULT_REGION:
                s3.create_bucket(Bucket=self.bucket)
            else:
                s3.create_bucket(
                    Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": self.region}
                )
            s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        finally:
            s3.close()
