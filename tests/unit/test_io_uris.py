"""Lake URIs handed to pyarrow.fs: Hadoop's s3a:// and s3n:// are pyarrow's s3://."""

from __future__ import annotations

import pytest

from jobs.core.io import pyarrow_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3a://homepage/lake/events", "s3://homepage/lake/events"),
        ("S3A://homepage/lake", "s3://homepage/lake"),
        ("s3n://bucket/x", "s3://bucket/x"),
        ("s3://bucket/x", "s3://bucket/x"),
        ("hdfs://nn:8020/lake", "hdfs://nn:8020/lake"),
        ("gs://bucket/lake", "gs://bucket/lake"),
        ("/tmp/lake", "/tmp/lake"),
    ],
)
def test_pyarrow_uri(uri: str, expected: str) -> None:
    assert pyarrow_uri(uri) == expected
