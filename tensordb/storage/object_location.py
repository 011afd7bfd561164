"""Where an ``s3://bucket/prefix`` path lives and which credentials reach it.

Credentials come from, in order: the ``creds=`` dict, the standard ``AWS_*``
environment variables, then the AWS profile files (``~/.aws/credentials`` and
``~/.aws/config``, or ``AWS_SHARED_CREDENTIALS_FILE`` / ``AWS_CONFIG_FILE``, for
``AWS_PROFILE`` or ``default``). The key pair and session token are taken as one
unit from the first source that has a key id, so a session token of one source
is never paired with the keys of another. Secrets never appear in ``repr``.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import StorageError

S3_SCHEME = "s3://"
CREDS_KEYS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "endpoint_url",
    "aws_region",
    "region",
)
DEFAULT_REGION = "us-east-1"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class S3Location:
    """A bucket, a key prefix inside it, and how to reach it. ``repr`` shows no secret."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str = DEFAULT_REGION
    allow_http: bool = False
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``: the identity of the store, never with credentials."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"

    def secrets(self) -> tuple[str, ...]:
        """The secret values, so that error text can be checked free of them."""
        return tuple(s for s in (self.access_key_id, self.secret_access_key, self.session_token) if s)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``(bucket, "some/prefix")``; the prefix may be empty."""
    if not url.startswith(S3_SCHEME):
        raise StorageError(f"{url!r} is not an S3 path: expected s3://bucket/prefix")
    rest = url[len(S3_SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise StorageError(
            f"{S3_SCHEME}{bucket.rpartition('@')[2]}: credentials or ports do not belong in an S3 path; "
            "pass creds= or set the AWS_* environment variables"
        )
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise StorageError(
            f"invalid S3 bucket name {bucket!r} in {S3_SCHEME}{bucket}: expected 3-63 lowercase letters, "
            "digits, dots or hyphens"
        )
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(p in ("", ".", "..") for p in parts) or "\0" in prefix:
        raise StorageError(f"invalid key prefix {prefix!r} in {S3_SCHEME}{bucket}: expected a/b/c without '..'")
    return bucket, prefix


def check_creds(creds: Mapping[str, object]) -> None:
    """Raise ``TypeError`` naming the allowed keys if ``creds`` has others (their values are never shown)."""
    if not isinstance(creds, Mapping):
        raise TypeError(f"creds must be a dict with keys among {', '.join(CREDS_KEYS)}; got a {type(creds).__name__}")
    unknown = sorted(str(k) for k in creds if k not in CREDS_KEYS)
    if unknown:
        raise TypeError(f"unknown creds key(s) {', '.join(unknown)}: expected keys among {', '.join(CREDS_KEYS)}")
    for key, value in creds.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"creds[{key!r}] must be a string, got a {type(value).__name__}")


def resolve_location(
    url: str, creds: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> S3Location:
    """The location of ``url`` with credentials from ``creds``, else the environment, else the profile files."""
    bucket, prefix = parse_s3_url(url)
    env = os.environ if environ is None else environ
    given = dict(creds or {})
    check_creds(given)
    profile = _profile(env)

    keys = _key_triple(given, "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
    keys = keys or _key_triple(env, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    keys = keys or _key_triple(profile, "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
    access_key_id, secret_access_key, session_token = keys or (None, None, None)

    endpoint = _first(
        given.get("endpoint_url"), env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL"),
        profile.get("endpoint_url"),
    )
    region = _first(
        given.get("aws_region"), given.get("region"), env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION"),
        profile.get("region"),
    )
    allow_http = bool(endpoint and endpoint.startswith("http://")) or env.get("AWS_ALLOW_HTTP", "").lower() in _TRUE
    return S3Location(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint.rstrip("/") if endpoint else None,
        region=region or DEFAULT_REGION,
        allow_http=allow_http,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=session_token,
    )


def _first(*values: object) -> str | None:
    return next((str(v) for v in values if v), None)


def _key_triple(source: Mapping, key_id: str, secret: str, token: str) -> tuple[str, str, str | None] | None:
    """The key id, secret and token of ``source`` if it names a key id (a key id without a secret is an error)."""
    if not source.get(key_id):
        return None
    if not source.get(secret):
        raise StorageError(f"S3 credentials name {key_id} but no {secret}: give both")
    return str(source[key_id]), str(source[secret]), (str(source[token]) if source.get(token) else None)


def _profile(env: Mapping[str, str]) -> dict[str, str]:
    """The settings of the AWS profile in use, from the credentials file over the config file."""
    name = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    home = os.path.expanduser("~")
    config_file = env.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")
    creds_file = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    settings: dict[str, str] = {}
    # In the config file a named profile's section is "profile NAME"; "default" is plain.
    config_section = name if name == "default" else f"profile {name}"
    settings.update(_read_section(config_file, config_section, fallback=name))
    settings.update(_read_section(creds_file, name))
    return settings


def _read_section(path: str, section: str, fallback: str | None = None) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        read = parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as e:
        # the file's path and the error kind only: the parser's message may quote a line holding a secret
        raise StorageError(f"the AWS profile file {path} cannot be parsed ({type(e).__name__})") from None
    if not read:
        return {}
    for name in (section, fallback):
        if name and parser.has_section(name):
            return {k.lower(): v.strip() for k, v in parser.items(name)}
    return {}
