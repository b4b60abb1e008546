"""s3fuse: an S3 bucket as a directory; every closed file is one atomic, MD5-checked PutObject."""

__version__ = "0.1.0"
