"""S3 actions on the lab's off-site store, run inside its namespace against moto on loopback.

``python -m tierwall.lab.offsite_s3 ACTION JSON``: prints the answer as JSON. The store's own
set-up (the buckets, as the provider's customer makes them) and what the live tests read or
attempt with the db's credentials (a compromised db deleting or overwriting its backups).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

ENDPOINT = "http://127.0.0.1:9000"
REGION = "eu-central-1"
# The owner's credentials (moto accepts any): the provider's customer, not the db.
OWNER = ("tierwall-lab-owner", "tierwall-lab-owner-secret")


def client(access_key: str = OWNER[0], secret_key: str = OWNER[1]) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name=REGION,
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
    )  # fmt: skip


def create_buckets(buckets: list[str], retention_days: int) -> dict:
    """Versioned buckets with Object Lock, COMPLIANCE for ``retention_days`` by default."""
    s3 = client()
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket in existing:
            continue
        s3.create_bucket(
            Bucket=bucket,
            ObjectLockEnabledForBucket=True,
            CreateBucketConfiguration={"LocationConstraint": REGION},
        )
        s3.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}},
            },
        )
    return {"buckets": sorted(set(buckets) | existing)}


def versions(bucket: str, prefix: str = "") -> dict:
    """Every version and delete marker under ``prefix``."""
    s3 = client()
    found: list[dict] = []
    markers: list[dict] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        found += [{"key": v["Key"], "version": v["VersionId"], "size": v["Size"], "latest": v["IsLatest"]}
                  for v in page.get("Versions", [])]  # fmt: skip
        markers += [{"key": m["Key"], "version": m["VersionId"]} for m in page.get("DeleteMarkers", [])]
    return {"versions": found, "delete_markers": markers}


def read(bucket: str, key: str, version: str = "") -> dict:
    """One object (a version of it), as latin-1 text (bytes 1:1) for the caller to search."""
    extra = {"VersionId": version} if version else {}
    body = client().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    return {"size": len(body), "text": body.decode("latin-1")}


def attack(bucket: str, key: str, version: str, access_key: str, secret_key: str, tries: list[str]) -> dict:
    """What a compromised db can try with its own credentials against one stored version: delete
    that version (also claiming to bypass a governance lock), delete the object, overwrite it.
    Runs the ``tries`` named, in that order; each outcome is reported."""
    from botocore.exceptions import ClientError

    s3 = client(access_key, secret_key)
    attempts: dict[str, Callable[[], object]] = {
        "delete_version": lambda: s3.delete_object(Bucket=bucket, Key=key, VersionId=version),
        "delete_version_bypassing_governance": lambda: s3.delete_object(
            Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
        ),
        "delete_object": lambda: s3.delete_object(Bucket=bucket, Key=key),
        "overwrite_object": lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"overwritten by the db"),
    }
    outcomes = {}
    for name in tries:
        try:
            attempts[name]()
            outcomes[name] = "done"
        except ClientError as exc:
            outcomes[name] = f"refused: {exc.response['Error']['Code']}"
    return outcomes


def put(bucket: str, key: str, body: str, access_key: str, secret_key: str) -> dict:
    """Write an object with the given credentials; its version id."""
    answer = client(access_key, secret_key).put_object(Bucket=bucket, Key=key, Body=body.encode())
    return {"version": answer["VersionId"]}


def undelete(bucket: str, key: str) -> dict:
    """The provider's customer (not the db) removes the delete markers the db left on ``key``."""
    s3 = client()
    removed = 0
    for marker in versions(bucket, key)["delete_markers"]:
        if marker["key"] == key:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=marker["version"])
            removed += 1
    return {"removed": removed}


ACTIONS: dict[str, Callable[..., dict]] = {
    "create-buckets": create_buckets,
    "versions": versions,
    "read": read,
    "attack": attack,
    "put": put,
    "undelete": undelete,
}


def main(argv: list[str]) -> int:
    action, arguments = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(ACTIONS[action](**arguments)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
