"""The xattr -> PutObject header map (DESIGN.md section 2): names, validation, conversion.

Pure logic: no S3, no FUSE. Values are validated when set, so a wrong value fails at
setxattr with EINVAL (and a message naming the allowed values), not at close().
"""

from __future__ import annotations

import base64
import binascii
import email.header
import errno
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from s3fuse.errors import FsError
from s3fuse.model.meta import OWN_META

PREFIX = "user.s3."
USER = "user."
META_LIMIT = 2048  # S3: keys + values of user metadata, UTF-8 bytes
DIR_DEFAULT = "s3fuse-default-"  # marker metadata that holds a directory's header defaults

STORAGE_CLASSES = (
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "EXPRESS_ONEZONE",
)  # fmt: skip
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
CANNED_ACLS = (
    "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
    "bucket-owner-read", "bucket-owner-full-control",
)  # fmt: skip
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
ON_OFF = ("ON", "OFF")
TRUE_FALSE = ("true", "false")
GRANTS = ("grant_read", "grant_read_acp", "grant_write_acp", "grant_full_control")
READ_ONLY = ("etag", "version_id", "last_modified", "md5")
# read-only, asked of S3 at each getxattr and never listed (core/versions.py)
ASKED = ("versions",)
ACTIONS = ("restore",)  # write-only: setting one does something (core/versions.py)


class XattrError(FsError):
    """A bad xattr name or value."""


@dataclass(frozen=True)
class Header:
    name: str  # xattr short name (after "user.s3.")
    param: str  # boto3 PutObject/CopyObject parameter
    kind: str  # enum | text | bool | grant | tagging | date
    allowed: tuple[str, ...] = ()


HEADERS: dict[str, Header] = {
    h.name: h
    for h in (
        Header("storage_class", "StorageClass", "enum", STORAGE_CLASSES),
        Header("sse", "ServerSideEncryption", "enum", SSE_MODES),
        Header("sse_kms_key_id", "SSEKMSKeyId", "text"),
        Header("sse_bucket_key", "BucketKeyEnabled", "bool", TRUE_FALSE),
        Header("acl", "ACL", "enum", CANNED_ACLS),
        Header("grant_read", "GrantRead", "grant"),
        Header("grant_read_acp", "GrantReadACP", "grant"),
        Header("grant_write_acp", "GrantWriteACP", "grant"),
        Header("grant_full_control", "GrantFullControl", "grant"),
        Header("content_type", "ContentType", "text"),
        Header("cache_control", "CacheControl", "text"),
        Header("content_disposition", "ContentDisposition", "text"),
        Header("content_encoding", "ContentEncoding", "text"),
        Header("content_language", "ContentLanguage", "text"),
        Header("tagging", "Tagging", "tagging"),
        Header("object_lock_mode", "ObjectLockMode", "enum", LOCK_MODES),
        Header("object_lock_retain_until", "ObjectLockRetainUntilDate", "date"),
        Header("object_lock_legal_hold", "ObjectLockLegalHoldStatus", "enum", ON_OFF),
    )
}
# Headers S3 keeps with the object data and that a HEAD returns (ACL and tags are not).
HEAD_FIELDS = {h.param: h.name for h in HEADERS.values() if h.kind not in ("grant", "tagging")}
HEAD_FIELDS.pop("ACL")

_GRANT_RE = re.compile(r'\s*(id|uri|emailAddress)="[^"\x00-\x1f]+"\s*')


# ------------------------------------------------------------------ names
@dataclass(frozen=True)
class Name:
    kind: str  # header | readonly | asked (read-only, from S3) | action | meta
    short: str  # header/read-only short name, or the metadata key


def parse_name(raw: bytes) -> Name:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XattrError(errno.EINVAL, "xattr name is not UTF-8") from None
    if not name.startswith(USER):
        # security.*, system.posix_acl_*, trusted.*: S3 cannot hold them.
        raise XattrError(errno.EOPNOTSUPP, f"{name}: only user.* attributes are supported")
    if name.startswith(PREFIX):
        short = name[len(PREFIX) :]
        if short in HEADERS:
            return Name("header", short)
        if short in READ_ONLY:
            return Name("readonly", short)
        if short in ASKED:
            return Name("asked", short)
        if short in ACTIONS:
            return Name("action", short)
        raise XattrError(
            errno.EINVAL,
            f"{name} is not an s3fuse attribute; known: "
            + ", ".join(PREFIX + n for n in [*HEADERS, *READ_ONLY, *ASKED, *ACTIONS]),
        )
    key = name[len(USER) :].lower()
    if not key or not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", key):
        raise XattrError(errno.EINVAL, f"{name}: user metadata names must be HTTP header tokens")
    if key in OWN_META or key.startswith(DIR_DEFAULT):
        raise XattrError(errno.EINVAL, f"{name} is reserved by s3fuse (use chmod, chown or touch)")
    return Name("meta", key)


# ------------------------------------------------------------------ values
def _header_value(name: str, text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in text):
        raise XattrError(
            errno.EINVAL,
            f"{name}: value must be printable ASCII (no control characters, no newline); "
            "encode other characters (RFC 2047 / RFC 5987)",
        )
    return text


def validate(short: str, raw: bytes, *, now: datetime | None = None) -> str:
    """The normalised value of header xattr `short`, or XattrError(EINVAL)."""
    h = HEADERS[short]
    full = PREFIX + short
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise XattrError(errno.EINVAL, f"{full}: value is not UTF-8") from None
    if h.kind in ("enum", "bool"):
        for a in h.allowed:
            if text == a or (h.kind == "bool" and text.lower() == a):
                return a
            if h.name in ("object_lock_mode", "object_lock_legal_hold", "storage_class") and (
                text.upper() == a
            ):
                return a
        raise XattrError(
            errno.EINVAL, f"{full}={text!r} is not allowed; allowed: {', '.join(h.allowed)}"
        )
    if not text:
        raise XattrError(errno.EINVAL, f"{full}: empty value (remove the attribute instead)")
    text = _header_value(full, text)
    if h.kind == "grant":
        if not all(_GRANT_RE.fullmatch(part) for part in text.split(",")):
            raise XattrError(
                errno.EINVAL,
                f'{full}={text!r}: expected id="...", uri="..." or emailAddress="...", '
                "comma separated",
            )
        return ", ".join(p.strip() for p in text.split(","))
    if h.kind == "tagging":
        return _validate_tagging(full, text)
    if h.kind == "date":
        when = parse_date(full, text)
        if when <= (now or datetime.now(UTC)):
            raise XattrError(errno.EINVAL, f"{full}={text!r} is in the past")
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return text


def _validate_tagging(full: str, text: str) -> str:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise XattrError(errno.EINVAL, f"{full}: expected URL-encoded k=v&k2=v2") from None
    if len(pairs) > 10:
        raise XattrError(errno.EINVAL, f"{full}: at most 10 tags")
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise XattrError(errno.EINVAL, f"{full}: a tag key appears twice")
    for k, v in pairs:
        if not k or len(k) > 128 or len(v) > 256:
            raise XattrError(
                errno.EINVAL, f"{full}: tag keys are 1-128 and values 0-256 characters"
            )
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def parse_date(full: str, text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise XattrError(
            errno.EINVAL, f"{full}={text!r}: expected an ISO-8601 date, e.g. 2030-01-01T00:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# user.* values that are not plain header text: non-ASCII UTF-8 text as an RFC 2047 encoded
# word (the form AWS S3 itself answers GETs of such values with), other bytes (control
# characters, spaces at an end, not UTF-8, empty) base64 after a marker
BYTES_MARKER = "s3fuse-b64:"
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=")


def encode_meta_value(raw: bytes) -> str:
    """The x-amz-meta-* value that holds xattr bytes `raw`: the bytes themselves when they
    are header text that comes back unchanged (printable ASCII, no space at either end,
    nothing that reads as an encoding), else an encoding that round-trips any bytes."""
    text = raw.decode("latin-1")
    if (
        text
        and all(0x20 <= b <= 0x7E for b in raw)
        and text == text.strip()
        and not text.startswith(BYTES_MARKER)
        and not (text.startswith("=?") and text.endswith("?="))
    ):
        return text
    try:
        raw.decode("utf-8")
        text_beyond_ascii = not raw.isascii()
    except UnicodeDecodeError:
        text_beyond_ascii = False
    if text_beyond_ascii:
        return "=?UTF-8?B?" + base64.b64encode(raw).decode() + "?="
    return BYTES_MARKER + base64.b64encode(raw).decode()


def decode_meta_value(value: str) -> bytes:
    """The xattr bytes an x-amz-meta-* value holds (encode_meta_value's inverse; RFC 2047
    words written by other tools or by AWS decode too)."""
    if value.startswith(BYTES_MARKER):
        try:
            return base64.b64decode(value[len(BYTES_MARKER) :], validate=True)
        except binascii.Error:
            return value.encode()
    if value.startswith("=?") and all(_ENCODED_WORD.fullmatch(w) for w in value.split()):
        try:
            return b"".join(
                part if isinstance(part, bytes) else part.encode()
                for part, _ in email.header.decode_header(value)
            )
        except (ValueError, binascii.Error):
            return value.encode()
    try:
        return value.encode("latin-1")  # botocore reads headers as latin-1: the raw bytes
    except UnicodeEncodeError:
        return value.encode()


def meta_size(meta: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())


def check_meta_size(meta: dict[str, str]) -> None:
    size = meta_size(meta)
    if size > META_LIMIT:
        raise XattrError(
            errno.E2BIG,
            f"user metadata would be {size} bytes; S3 allows {META_LIMIT} (names + values, "
            "s3fuse's mode/uid/gid/mtime included)",
        )


# ------------------------------------------------------------------ conversion
def from_head(fields: dict[str, Any]) -> dict[str, str]:
    """What a HeadObject answer says about the header xattrs."""
    out: dict[str, str] = {}
    for param, short in HEAD_FIELDS.items():
        v = fields.get(param)
        if v is None or v == "":
            continue
        if isinstance(v, bool):
            out[short] = "true" if v else "false"
        elif isinstance(v, datetime):
            out[short] = v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            out[short] = str(v)
    return out


def grants_from_acl(acl: dict[str, Any]) -> dict[str, str]:
    """GetObjectAcl -> grant_* values. The owner's own FULL_CONTROL is implicit (private)."""
    owner = (acl.get("Owner") or {}).get("ID")
    by_perm: dict[str, list[str]] = {}
    for g in acl.get("Grants", []):
        grantee = g.get("Grantee", {})
        perm = g.get("Permission", "")
        if grantee.get("Type") == "CanonicalUser":
            if grantee.get("ID") == owner and perm == "FULL_CONTROL":
                continue
            who = f'id="{grantee.get("ID")}"'
        elif grantee.get("Type") == "Group":
            who = f'uri="{grantee.get("URI")}"'
        elif grantee.get("Type") == "AmazonCustomerByEmail":
            who = f'emailAddress="{grantee.get("EmailAddress")}"'
        else:
            continue
        short = {
            "READ": "grant_read",
            "READ_ACP": "grant_read_acp",
            "WRITE_ACP": "grant_write_acp",
            "FULL_CONTROL": "grant_full_control",
        }.get(perm)
        if short:
            by_perm.setdefault(short, []).append(who)
    return {k: ", ".join(v) for k, v in by_perm.items()}


def tagging_from_tags(tags: list[dict[str, str]]) -> str:
    return "&".join(f"{quote(t['Key'], safe='')}={quote(t['Value'], safe='')}" for t in tags)


def dir_defaults_to_meta(values: dict[str, str]) -> dict[str, str]:
    """A directory's header xattrs, kept as user metadata of its marker object."""
    return {DIR_DEFAULT + k.replace("_", "-"): v for k, v in values.items()}


def dir_defaults_from_meta(meta: dict[str, str]) -> dict[str, str]:
    out = {}
    for k, v in meta.items():
        if k.startswith(DIR_DEFAULT):
            short = k[len(DIR_DEFAULT) :].replace("-", "_")
            if short in HEADERS:
                out[short] = v
    return out
