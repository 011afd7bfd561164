"""DataLoader benchmark: samples/s through ds.pytorch() against an in-memory TensorDataset.

    python benchmarks/dataloader.py [--rows 200000] [--batch-size 256] [--workers 0 2] [--out results.json]

Data: a 384-d float32 embedding and a ~200-byte text per row, in a local dataset
in a temporary directory. Each configuration iterates whole epochs (the best of
``--repeats`` is kept; the first epoch also verifies chunk checksums). The
baseline, in the same run, is a ``torch.utils.data.TensorDataset`` of the same
embeddings (plus a row-number tensor standing in for the text, which a
TensorDataset cannot hold) iterated by a ``DataLoader`` with the same batch size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_rss_mb, print_table, write_json  # noqa: E402

DIM = 384
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore " * 2


def build(path: str, rows: int, batch: int = 20_000) -> float:
    import tensordb

    start = time.perf_counter()
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("text", htype="text")
    for lo in range(0, rows, batch):
        hi = min(rows, lo + batch)
        rng = np.random.default_rng(lo)
        ds.extend({
            "embedding": rng.standard_normal((hi - lo, DIM), dtype=np.float32),
            "text": [f"document {i} {FILLER}"[:200] for i in range(lo, hi)],
        })
    ds.commit("bench data")
    ds.close()
    return time.perf_counter() - start


def epoch(loader, key: str) -> tuple[float, int]:
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += len(batch[key]) if isinstance(batch, dict) else len(batch[0])
    return time.perf_counter() - start, seen


def best_epoch(loader, key: str, repeats: int, rows: int) -> float:
    times = []
    for _ in range(repeats):
        seconds, seen = epoch(loader, key)
        assert seen == rows, f"saw {seen} rows, expected {rows}"
        times.append(seconds)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON output path (default benchmarks/results/dataloader.json)")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import tensordb

    scratch = tempfile.mkdtemp(prefix="tensordb-dataloader-")
    try:
        path = os.path.join(scratch, "ds")
        build_s = build(path, args.rows)
        ds = tensordb.load(path, read_only=True)
        rows_out: list[dict] = []
        results: dict = {"rows": args.rows, "batch_size": args.batch_size, "dim": DIM, "build_s": build_s,
                         "torch": torch.__version__, "configs": {}}

        # Baseline: everything in memory, the same batch size, the standard DataLoader path.
        emb = torch.from_numpy(ds.embedding.numpy())
        baseline = DataLoader(TensorDataset(emb, torch.arange(args.rows)), batch_size=args.batch_size)
        base_s = best_epoch(baseline, "", args.repeats, args.rows)
        base_rate = args.rows / base_s
        results["baseline_tensordataset"] = {"seconds": base_s, "samples_per_s": base_rate}
        rows_out.append({"loader": "TensorDataset (in memory)", "workers": 0, "samples/s": base_rate,
                         "seconds": base_s, "vs baseline": 1.0})
        del baseline

        for shuffle in (False, True):
            for workers in args.workers:
                loader = ds.pytorch(batch_size=args.batch_size, num_workers=workers, shuffle=shuffle, seed=0)
                seconds = best_epoch(loader, "embedding", args.repeats, args.rows)
                rate = args.rows / seconds
                name = f"pytorch(shuffle={shuffle}, num_workers={workers})"
                results["configs"][name] = {"seconds": seconds, "samples_per_s": rate, "vs_baseline": rate / base_rate}
                rows_out.append({"loader": f"ds.pytorch{' shuffled' if shuffle else ''}", "workers": workers,
                                 "samples/s": rate, "seconds": seconds, "vs baseline": rate / base_rate})
        results["peak_rss_mb"] = peak_rss_mb()
        key = "pytorch(shuffle=False, num_workers=0)"
        if key in results["configs"]:
            results["targets"] = {"workers0_vs_baseline >= 0.7": results["configs"][key]["vs_baseline"] >= 0.7}
        print_table(
            f"DataLoader over {args.rows:,} rows (384-d embedding + text), batch_size={args.batch_size}",
            rows_out, ["loader", "workers", "samples/s", "seconds", "vs baseline"],
        )
        for k, v in results.get("targets", {}).items():
            print(f"target {k}: {'met' if v else 'MISSED'}")
        write_json("dataloader", results, args.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
