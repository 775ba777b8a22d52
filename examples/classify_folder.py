"""Classify every image in a folder with a running imgclf server.

python examples/classify_folder.py photos/ --model pets
python examples/classify_folder.py photos/ --model pets --grpc 127.0.0.1:8500
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imgclf.client import BadRequest, Client

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}
BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rest", default="http://127.0.0.1:8501")
    parser.add_argument("--grpc", help="use gRPC at HOST:PORT instead of REST")
    parser.add_argument("--token", help="bearer token, if the server requires one")
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    client = Client(
        rest_url=None if args.grpc else args.rest,
        grpc_target=args.grpc,
        token=args.token,
        model=args.model,
    )
    with client:
        for start in range(0, len(files), BATCH):
            batch = files[start : start + BATCH]
            try:
                predictions = client.predict(batch)
            except BadRequest:  # one bad file: classify this batch one by one
                predictions = []
                for path in batch:
                    try:
                        predictions += client.predict([path])
                    except BadRequest as exc:
                        print(f"{path}: skipped ({exc.message})")
                        predictions.append(None)
            for path, p in zip(batch, predictions, strict=True):
                if p is not None:
                    print(f"{path}: {p.label} ({p.score:.2f}, model v{p.version})")


if __name__ == "__main__":
    main()
