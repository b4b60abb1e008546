"""botocore's exceptions turned into StoreError (the only failure that leaves the S3
layer), each counted in the client's Stats by its S3 error code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions

from s3fuse.errors import StoreError
from s3fuse.s3.types import Stats

UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)


@contextmanager
def translated(op: str, key: str, stats: Stats, endpoint: str | None) -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        meta = e.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        code = str(err.get("Code") or status or "Unknown")
        stats.error(code)
        raise StoreError(
            code,
            str(err.get("Message") or e),
            op=op,
            key=key,
            status=status,
            request_id=str(meta.get("RequestId", "")),
        ) from None
    except UNREACHABLE as e:
        stats.error("EndpointUnreachable")
        raise StoreError(
            "EndpointUnreachable",
            f"cannot reach {endpoint or 'the S3 endpoint'}: {e}",
            op=op,
            key=key,
        ) from None
    except botocore.exceptions.NoCredentialsError:
        stats.error("NoCredentials")
        raise StoreError(
            "NoCredentials",
            "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile, or ~/.aws/credentials)",
            op=op,
            key=key,
        ) from None
    except botocore.exceptions.BotoCoreError as e:
        stats.error(type(e).__name__)
        raise StoreError(type(e).__name__, str(e), op=op, key=key) from None
