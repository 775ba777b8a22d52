"""Retrain when new data lands, wait for the job, and report whether it was promoted.

    python examples/retrain_and_wait.py /data/pets --model pets --token "$TOKEN"

TOKEN is one of the server's admin tokens (IMGCLF_ADMIN_TOKENS, comma-separated).

The data path must lie under the server's IMGCLF_DATA_ROOTS. The job goes through the
queue; the promotion gate decides whether the new version becomes `stable`.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from imgclf.client import Client


def data_fingerprint(folder: Path) -> str:
    """Same files -> same key, so re-running this script never trains twice on the same data."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(folder)}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rest", default="http://127.0.0.1:8501")
    parser.add_argument("--token", required=True)
    parser.add_argument("--weights", default="imagenet")
    args = parser.parse_args()
    with Client(rest_url=args.rest, token=args.token, model=args.model) as client:
        job = client.submit_job(
            str(args.data),
            weights=args.weights,
            idempotency_key=f"{args.model}-{data_fingerprint(args.data)}",
        )
        print(f"job {job.id}: {job.status}")
        final = client.wait(job.id, progress=True)
        print(f"job {final.id}: {final.status}")
        promotion = final.record.get("promotion") or {}
        if final.status == "succeeded":
            print(
                f"version {final.version} is now stable "
                f"(test accuracy {final.record['metrics']['accuracy']:.1%})"
            )
            return 0
        if final.status == "rejected":
            print("kept the live version: " + "; ".join(promotion.get("reasons", [])))
            return 1
        print(f"the job did not finish: {final.error}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
