"""The one request builder: the parameters of every PutObject (file, directory marker,
symlink), CopyObject and multipart upload s3fuse sends, and the rules that decide them.

Pure logic (no S3, no FUSE, no trio). The rules, each here and nowhere else:
- precedence: the file's own header xattrs > the nearest directory's > farther ones >
  mount options > the server's defaults (DESIGN.md section 2);
- a canned ACL and explicit grants exclude each other (S3 refuses both): the more
  specific level's choice replaces a less specific one's whole, and within one level the
  grants win, being the more precise wish;
- SSE-C: the customer key is added by the S3 client to every request that touches data
  (it is never an xattr); with it, no SSE header xattr is sent (S3 refuses both);
- a CopyObject restates every header (MetadataDirective REPLACE: S3 copies neither
  metadata nor ACLs) but tags, which S3 copies unless they are what changed;
- conflict detection: a new key is created with If-None-Match: *, a changed one replaces
  only the version it was read at (If-Match).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from s3fuse.model import meta
from s3fuse.model.etag import PartPlan
from s3fuse.model.xattrs import GRANTS, HEADERS, parse_date

ACCESS = ("acl", *GRANTS)  # the values that decide who may read the object

Params = dict[str, Any]


# ------------------------------------------------------------------ header values
def chooses_access(values: dict[str, str]) -> bool:
    """Whether a level says who may read (a canned ACL or a grant)."""
    return any(k in values for k in ACCESS)


def with_value(values: dict[str, str], short: str, value: str) -> dict[str, str]:
    """values with one header xattr set: a canned ACL replaces the level's grants, a grant
    replaces its canned ACL (other grants stay: they add up)."""
    out = dict(values)
    if short == "acl":
        for g in GRANTS:
            out.pop(g, None)
    elif short in GRANTS:
        out.pop("acl", None)
    out[short] = value
    return out


def merged(levels: Iterable[dict[str, str]]) -> dict[str, str]:
    """The header xattr values of an object from its levels, least specific first
    (mount options, farthest directory, ..., nearest directory, the object itself)."""
    out: dict[str, str] = {}
    for level in levels:
        if chooses_access(level):
            for k in ACCESS:
                out.pop(k, None)
        out.update(level)
    return out


def file_values(levels: Iterable[dict[str, str]], name: str) -> dict[str, str]:
    """merged(), with the content type guessed from the name when no level sets one."""
    values = merged(levels)
    values.setdefault("content_type", meta.content_type_for(name))
    return values


def sse_only(values: dict[str, str]) -> dict[str, str]:
    """The encryption values alone: what a directory marker takes from mount options."""
    return {k: v for k, v in values.items() if k.startswith("sse")}


def without_sse(values: dict[str, str]) -> dict[str, str]:
    """Values as a mount with a customer key (SSE-C) sends them."""
    return {k: v for k, v in values.items() if not k.startswith("sse")}


def params(values: dict[str, str], *, now: datetime | None = None) -> Params:
    """Header xattr values -> boto3 PutObject/CopyObject/CreateMultipartUpload keywords."""
    out: Params = {}
    for short, value in values.items():
        h = HEADERS[short]
        if h.kind == "bool":
            out[h.param] = value == "true"
        elif h.kind == "date":
            out[h.param] = parse_date(short, value)
        else:
            out[h.param] = value
    until = out.get("ObjectLockRetainUntilDate")
    if until is not None and until <= (now or datetime.now(UTC)):
        # an expired retention cannot be re-sent (S3 wants a future date); it ended anyway
        out.pop("ObjectLockRetainUntilDate")
        out.pop("ObjectLockMode", None)
    if "ACL" in out and any(p.startswith("Grant") for p in out):
        out.pop("ACL")
    return out


def values_of(params: Params) -> dict[str, str]:
    """PutObject keywords (as journaled: dates as ISO-8601 text) -> header xattr values:
    the inverse of params()."""
    out: dict[str, str] = {}
    for h in HEADERS.values():
        v = params.get(h.param)
        if v is None:
            continue
        if isinstance(v, bool):
            out[h.name] = "true" if v else "false"
        elif isinstance(v, datetime):
            out[h.name] = v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            out[h.name] = str(v)
    return out


# ------------------------------------------------------------------ requests
def file_put(values: dict[str, str], metadata: dict[str, str]) -> Params:
    """A file's PutObject (or CreateMultipartUpload): its header values and metadata."""
    out = params(values)
    out["Metadata"] = dict(metadata)
    return out


def marker_put(mount_values: dict[str, str], metadata: dict[str, str]) -> Params:
    """A directory marker: the mount's encryption (a marker may hold defaults that are
    secret enough to want it), the directory content type, no ACL or storage class."""
    out = params(sse_only(mount_values))
    out["Metadata"] = dict(metadata)
    out["ContentType"] = meta.DIR_CONTENT_TYPE
    return out


def whole_put(values: dict[str, str], metadata: dict[str, str]) -> Params:
    """A symlink (the s3fs-fuse way: body = target) or a special file (no body):
    inherited headers, and a binary content type whatever its name looks like."""
    out = file_put(values, metadata)
    out["ContentType"] = meta.DEFAULT_CONTENT_TYPE
    return out


def copy(
    values: dict[str, str],
    metadata: dict[str, str],
    content_type: str,
    *,
    sse_c: bool = False,
    tagging: str | None = None,
) -> Params:
    """CopyObject keywords that restate every header of the object. Tags are copied by S3
    unless ``tagging`` is given (the new tag set, "" for none)."""
    kept = {k: v for k, v in values.items() if k != "tagging"}
    out = file_put(without_sse(kept) if sse_c else kept, metadata)
    if content_type:
        out.setdefault("ContentType", content_type)
    if tagging is not None:
        out["TaggingDirective"] = "REPLACE"
        out["Tagging"] = tagging
    return out


def with_metadata(request: Params, extra: dict[str, str]) -> Params:
    """request with more user metadata (block checksums, the part size): a new dict, the
    caller's stays as it was (it may be journaled or sent again)."""
    return {**request, "Metadata": {**(request.get("Metadata") or {}), **extra}}


def multipart_create(request: Params, plan: PartPlan) -> Params:
    """CreateMultipartUpload keywords: the part size (plan) goes along, so that a reader
    can recompute the multipart ETag."""
    return with_metadata(request, {meta.META_PART_SIZE: plan.encode()})


def content_md5(md5: bytes) -> str:
    return base64.b64encode(md5).decode("ascii")


# ------------------------------------------------------------------ SSE-C
def sse_c(key: bytes | None) -> Params:
    """Keywords of every request that reads or writes object data under SSE-C (botocore
    adds the key's MD5 and base64-encodes it)."""
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key} if key else {}


def sse_c_copy_source(key: bytes | None) -> Params:
    """The extra keywords of a CopyObject whose source is encrypted with the same key."""
    if not key:
        return {}
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


# ------------------------------------------------------------------ conditions
def quoted(etag: str) -> str:
    """An ETag as condition headers carry it."""
    return f'"{etag}"'


def conditions(base_etag: str | None) -> dict[str, str]:
    """Conditions of a conflict-detecting upload: create only if absent, or replace only
    the version it was based on."""
    return {"IfNoneMatch": "*"} if base_etag is None else {"IfMatch": quoted(base_etag)}


def read_pin(version_id: str | None, etag: str) -> dict[str, str]:
    """GetObject's condition that keeps every read of a descriptor on the version it
    opened: that version itself where the bucket keeps versions (its bytes stay readable
    after another client replaced the name), else IfMatch its ETag (a replacement then
    fails the GET, PreconditionFailed, and is never mixed into what was read)."""
    if version_id and version_id != "null":
        return {"VersionId": version_id}
    return {"IfMatch": quoted(etag)} if etag else {}


def copy_conditions(
    source_etag: str | None, *, dest_absent: bool = False, dest_etag: str | None = None
) -> dict[str, str]:
    """Conditions of a conflict-detecting CopyObject: the source is still the version
    this mount saw; the destination is still absent, or still the version it saw."""
    out: dict[str, str] = {}
    if source_etag:
        out["CopySourceIfMatch"] = quoted(source_etag)
    if dest_absent:
        out["IfNoneMatch"] = "*"
    elif dest_etag:
        out["IfMatch"] = quoted(dest_etag)
    return out


def unquoted(conds: dict[str, str]) -> dict[str, str] | None:
    """The same If-Match with the ETag unquoted (Ceph RGW compares it so; AWS takes
    both), or None when there is no If-Match to retry."""
    if "IfMatch" not in conds:
        return None
    return {**conds, "IfMatch": conds["IfMatch"].strip('"')}


def base_of(conds: dict[str, str] | None) -> str | None:
    """The ETag an upload was based on, from its (journaled) conditions."""
    if conds and "IfMatch" in conds:
        return conds["IfMatch"].strip('"')
    return None
