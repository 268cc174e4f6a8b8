"""S3's conditional writes as the shared ledger uses them: `If-None-Match: *` creates once,
`If-Match` replaces or deletes only the version that was read, and both hold under concurrency.

moto 5.2.5 checks both headers on PutObject (and `If-Match` on DeleteObject) itself; its check
and its write are one step here because every moto call runs under `world.lock`."""

import threading

import pytest
from botocore.exceptions import ClientError


def code(e: pytest.ExceptionInfo) -> str:
    return e.value.response["Error"]["Code"]


def test_if_none_match_creates_once_and_if_match_needs_the_etag(local_ec2):
    s3 = local_ec2.client("s3")
    s3.create_bucket(Bucket="ledger")
    etag = s3.put_object(Bucket="ledger", Key="k", Body=b"one", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="ledger", Key="k", Body=b"two", IfNoneMatch="*")
    assert code(e) == "PreconditionFailed"
    assert s3.get_object(Bucket="ledger", Key="k")["Body"].read() == b"one"
    new = s3.put_object(Bucket="ledger", Key="k", Body=b"three", IfMatch=etag)["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="ledger", Key="k", Body=b"four", IfMatch=etag)
    assert code(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="ledger", Key="k", IfMatch=etag)
    assert code(e) == "PreconditionFailed"
    s3.delete_object(Bucket="ledger", Key="k", IfMatch=new)
    assert s3.list_objects_v2(Bucket="ledger").get("KeyCount") == 0


def test_concurrent_creates_of_one_key_let_exactly_one_win(local_ec2):
    s3 = local_ec2.client("s3")
    s3.create_bucket(Bucket="race")
    clients = [local_ec2.client("s3") for _ in range(8)]
    for key in range(20):
        won, lost, start = [], [], threading.Barrier(len(clients))

        def put(i, c, key=key):
            start.wait()
            try:
                c.put_object(Bucket="race", Key=f"k{key}", Body=f"writer {i}".encode(), IfNoneMatch="*")
                won.append(i)
            except ClientError as e:
                assert e.response["Error"]["Code"] == "PreconditionFailed"
                lost.append(i)

        threads = [threading.Thread(target=put, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, (key, won)
        assert len(lost) == len(clients) - 1
        body = s3.get_object(Bucket="race", Key=f"k{key}")["Body"].read()
        assert body == f"writer {won[0]}".encode()
