"""S3 failures as values the upper layers understand: an error code and an errno."""

from __future__ import annotations

import errno

# S3 error code (or HTTP status as text, which HEAD answers carry) -> errno.
S3_ERRNO: dict[str, int] = {
    "NoSuchKey": errno.ENOENT,
    "404": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "NoSuchBucket": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "403": errno.EACCES,
    "Forbidden": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "ExpiredToken": errno.EACCES,
    "InvalidToken": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    "NoCredentials": errno.EACCES,
    "AccessControlListNotSupported": errno.EOPNOTSUPP,
    "NotImplemented": errno.EOPNOTSUPP,
    "InvalidStorageClass": errno.EINVAL,
    "InvalidArgument": errno.EINVAL,
    "InvalidRequest": errno.EINVAL,
    "InvalidEncryptionAlgorithmError": errno.EINVAL,
    "InvalidTag": errno.EINVAL,
    "MalformedXML": errno.EINVAL,
    "MetadataTooLarge": errno.E2BIG,
    "KeyTooLongError": errno.ENAMETOOLONG,
    "EntityTooLarge": errno.EFBIG,
    "QuotaExceeded": errno.EDQUOT,
    "PreconditionFailed": errno.EBUSY,
    "412": errno.EBUSY,
    "ConditionalRequestConflict": errno.EBUSY,
    "InvalidObjectState": errno.EAGAIN,
    "BadDigest": errno.EIO,
    "InvalidDigest": errno.EIO,
    "ChecksumMismatch": errno.EIO,
    "EndpointUnreachable": errno.EIO,
}


# ---- classes of S3 error codes: what a caller does about them
# a body that changed in transit: Content-MD5 (BadDigest) or, over plain http where the
# SigV4 signature covers the payload's SHA-256, the signature check
CORRUPTED = ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch")
CORRUPTION = (*CORRUPTED, "ChecksumMismatch")  # ... or what s3fuse's own checks found
# a CompleteMultipartUpload whose request was garbled on the way: send it again
COMPLETE_GARBLED = ("MalformedXML", "InvalidPart", "InvalidPartOrder")
CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict")  # a condition failed
# a condition header the server does not implement (AWS's answers to unsupported ones)
UNSUPPORTED = ("NotImplemented", "501", "InvalidArgument", "InvalidRequest")
TRANSIENT = ("EndpointUnreachable", "InternalError", "ServiceUnavailable", "SlowDown",
             "RequestTimeout", "500", "502", "503", "504")  # fmt: skip
# transient, and still failing after every retry: the server is down or overloaded
UNREACHABLE = ("EndpointUnreachable", "ServiceUnavailable", "SlowDown", "503", "RequestTimeout")
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
NO_BUCKET = ("NoSuchBucket", "404", "NotFound")  # a HEAD of the bucket answers a bare 404
NO_UPLOAD = ("NoSuchUpload", "404")


def errno_for(code: str) -> int:
    if code.startswith("KMS."):
        return errno.EINVAL
    return S3_ERRNO.get(code, errno.EIO)


class FsError(Exception):
    """A refusal the file system reports as an errno, with a message for the log."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class StoreError(Exception):
    """A failed S3 request. ``code`` is S3's error code, or one of ours:
    EndpointUnreachable, NoCredentials, ChecksumMismatch."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        op: str = "",
        key: str = "",
        status: int = 0,
        request_id: str = "",
        stored_etag: str = "",
    ) -> None:
        super().__init__(message)
        # a ChecksumMismatch of a request that stored bytes: the ETag S3 gave them
        self.stored_etag = stored_etag
        self.code = code
        self.message = message
        self.op = op
        self.key = key
        self.status = status
        self.request_id = request_id
        self.errno = errno_for(code)

    def __str__(self) -> str:
        where = f" {self.op}" if self.op else ""
        what = f" key={self.key!r}" if self.key else ""
        rid = f" request-id={self.request_id}" if self.request_id else ""
        return f"S3{where} failed: {self.code}: {self.message}{what}{rid}"


_HINTS = {
    "AccessControlListNotSupported": "ACLs are disabled on this bucket (Object Ownership: "
    "bucket owner enforced): remove user.s3.acl / user.s3.grant_* and the acl mount option",
    "InvalidStorageClass": "this server does not offer that storage class",
    "AccessDenied": "the credentials may not do this (bucket policy, IAM, or KMS key policy)",
    "EndpointUnreachable": "is the S3 server up? the data stays in the spool",
}


def hint_for(code: str) -> str:
    """A sentence that says what to do about an S3 error code, or ''."""
    hint = _HINTS.get(code) or (
        "check the KMS key id and its policy" if code.startswith("KMS.") else ""
    )
    return f" ({hint})" if hint else ""
