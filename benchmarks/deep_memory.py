"""Deep Memory on a BEIR-format folder with precomputed embeddings (e.g. SciFact).

    python benchmarks/deep_memory.py --data ../shared/data/scifact [--out results.json]

Trains through the public VectorStore API on qrels/train.tsv (the trainer holds
out part of train for model selection) and reports on qrels/dev.tsv, with and
without the model: recall@1/3/5/10/50/100 and nDCG@10, training seconds, search
latency with and without ``deep_memory`` on the same store, and the few-label
check (random 40 training queries, 5 seeds).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_json  # noqa: E402

KS = (1, 3, 5, 10, 50, 100)
METRICS = [f"recall@{k}" for k in KS] + ["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder with corpus_emb.npy, queries_emb.npy, qrels/")
    parser.add_argument("--out", default=None)
    parser.add_argument("--few-label-seeds", type=int, default=5)
    parser.add_argument("--latency-queries", type=int, default=100)
    args = parser.parse_args()

    from tensordb import VectorStore
    from tensordb.demo import load_beir

    data = load_beir(args.data)
    ids, corpus, embed = data.ids, data.embeddings, data.embedding_function
    train_q, train_rel = data.train_queries, data.train_relevance
    dev_q, dev_rel = data.test_queries, data.test_relevance
    scratch = tempfile.mkdtemp(prefix="tensordb-dm-")
    try:
        vs = VectorStore(os.path.join(scratch, "store"), embedding_function=embed, overwrite=True)
        vs.add(text=[""] * len(ids), embedding=corpus, id=ids)
        vs.dataset.commit("corpus")

        start = time.perf_counter()
        job = vs.deep_memory.train(queries=train_q, relevance=train_rel)
        vs.deep_memory.wait(job)
        train_seconds = time.perf_counter() - start
        status = vs.deep_memory.status(job)
        if status["status"] != "completed":
            raise SystemExit(f"training ended {status['status']}: {status['progress']}")
        full = vs.deep_memory.evaluate(queries=dev_q, relevance=dev_rel, top_k=KS, show=False)

        # Latency: the same store, plain cosine vs deep_memory=True, alternating per query.
        # The first deep_memory search folds the model into the blocks: timed on its own.
        from tensordb.deep_memory.folding import FOLDED_BLOCKS

        qs = list(embed(dev_q[: args.latency_queries]))
        FOLDED_BLOCKS.clear()
        t0 = time.perf_counter()
        vs.search(embedding=qs[0], k=10, deep_memory=True)
        first_ms = 1000 * (time.perf_counter() - t0)
        for q in qs:  # warm-up pass, untimed
            vs.search(embedding=q, k=10)
            vs.search(embedding=q, k=10, deep_memory=True)
        plain, dm = [], []
        for q in qs * 3:
            t0 = time.perf_counter()
            vs.search(embedding=q, k=10)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vs.search(embedding=q, k=10, deep_memory=True)
            dm.append(time.perf_counter() - t0)
        latency = {"plain_ms": 1000 * float(np.median(plain)), "deep_memory_ms": 1000 * float(np.median(dm)),
                   "paired_ratio": float(np.median(np.array(dm) / np.array(plain))),
                   "first_deep_memory_ms": first_ms,
                   "folded_mib": FOLDED_BLOCKS.nbytes / 2**20,
                   "embedding_mib": len(ids) * corpus.shape[1] * 4 / 2**20}
        latency["ratio"] = latency["deep_memory_ms"] / latency["plain_ms"]

        few = []
        for seed in range(args.few_label_seeds):
            picked = random.Random(seed).sample(range(len(train_q)), 40)
            store = VectorStore(os.path.join(scratch, f"few{seed}"), embedding_function=embed, overwrite=True)
            store.add(text=[""] * len(ids), embedding=corpus, id=ids)
            job = store.deep_memory.train(queries=[train_q[i] for i in picked],
                                          relevance=[train_rel[i] for i in picked], seed=seed)
            store.deep_memory.wait(job)
            result = store.deep_memory.evaluate(queries=dev_q, relevance=dev_rel, top_k=KS, show=False)
            worst = min(result["with model"][m] - result["without model"][m] for m in METRICS)
            few.append({"seed": seed, "worst_delta_points": 100 * worst,
                        "ndcg@10_delta_points": 100 * (result["with model"]["ndcg@10"]
                                                        - result["without model"]["ndcg@10"])})
            store.close()
        vs.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = [{"metric": m, "without": full["without model"][m], "with": full["with model"][m],
             "delta (points)": 100 * (full["with model"][m] - full["without model"][m])} for m in METRICS]
    print_table(f"Deep Memory on {os.path.basename(os.path.normpath(args.data))} dev "
                f"({len(dev_q)} queries; trained on {len(train_q)} train queries)", rows,
                ["metric", "without", "with", "delta (points)"])
    print_table("Training and search", [
        {"measure": "training seconds (wall, 2 cores)", "value": train_seconds},
        {"measure": "search median ms, plain cosine", "value": latency["plain_ms"]},
        {"measure": "search median ms, deep_memory=True", "value": latency["deep_memory_ms"]},
        {"measure": "search ratio (of medians)", "value": latency["ratio"]},
        {"measure": "search ratio (median of per-query pairs)", "value": latency["paired_ratio"]},
        {"measure": "first deep_memory search ms (folds the model into the blocks)",
         "value": latency["first_deep_memory_ms"]},
        {"measure": "folded copies held, MiB", "value": latency["folded_mib"]},
        {"measure": "embedding column, MiB", "value": latency["embedding_mib"]},
    ], ["measure", "value"])
    print_table("Few labels: 40 random training queries", few, ["seed", "worst_delta_points", "ndcg@10_delta_points"])
    targets = {
        "ndcg@10 >= 0.78": full["with model"]["ndcg@10"] >= 0.78,
        "recall@1 >= 0.63": full["with model"]["recall@1"] >= 0.63,
        "recall@10 >= 0.84": full["with model"]["recall@10"] >= 0.84,
        "training <= 60 s": train_seconds <= 60,
        "deep_memory search <= 1.1x plain": latency["ratio"] <= 1.1,
        "few labels: no metric below baseline by > 0.5 points": min(f["worst_delta_points"] for f in few) >= -0.5,
    }
    print_table("Targets", [{"target": k, "met": "yes" if v else "NO"} for k, v in targets.items()], ["target", "met"])
    write_json("deep_memory", {"dev": full, "train_seconds": train_seconds, "latency": latency,
                               "few_labels": few, "targets": targets}, args.out)


if __name__ == "__main__":
    main()
