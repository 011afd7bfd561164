"""Deep Memory training, local against ``engine="ray"`` (Ray Train, torch DDP), on a BEIR folder such as SciFact.

    python benchmarks/dm_ray_training.py --data ../shared/data/scifact [--max-seconds 60] [--workers 2] [--out r.json]

Both jobs train through the public VectorStore API on qrels/train.tsv with the same seed and
``max_seconds`` and are evaluated on qrels/dev.tsv: nDCG@10 (and recall@10) with each model, the
training seconds inside the job, the wall seconds from ``train`` to the end of ``wait`` (Ray's
includes starting the Ray Train workers), and the selection epochs each reached. When the time
budget cut either job, a second view trains both again with a budget they do not reach
(``max_seconds=UNTIMED_SECONDS``), so that both run the same epochs up to early stopping.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_json  # noqa: E402

#: A budget no SciFact job reaches (it early-stops first): the "same epochs" view.
UNTIMED_SECONDS = 3600.0
COLUMNS = ["view", "engine", "ndcg@10", "recall@10", "train seconds", "wall seconds", "epochs", "best epoch",
           "time budget"]


def compare(scifact_dir: str, max_seconds: float, num_workers: int) -> dict[str, Any]:
    """Train locally and on Ray (``num_workers`` DDP workers) with the same budget and seed; dev figures of each.

    Returns ``{"local": {...}, "ray": {...}, "ndcg@10_gap_points": ..}``, each engine's dict with
    ``ndcg@10``, ``recall@10``, ``seconds`` (training, inside the job), ``wall_seconds``, ``epochs``,
    ``best_epoch`` and ``time_budget``; plus ``"untimed"`` with the same keys when the budget cut a job.
    """
    import ray

    from tensordb import VectorStore
    from tensordb.demo import load_beir

    data = load_beir(scifact_dir)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    scratch = tempfile.mkdtemp(prefix="tensordb-dm-ray-")
    try:
        vs = VectorStore(os.path.join(scratch, "store"), embedding_function=data.embedding_function, overwrite=True)
        vs.add(text=[""] * len(data.ids), embedding=data.embeddings, id=data.ids)
        vs.dataset.commit("corpus")

        def both(seconds: float) -> dict[str, Any]:
            local = _train_and_evaluate(vs, data, seconds, engine="local")
            remote = _train_and_evaluate(vs, data, seconds, engine="ray", num_workers=num_workers)
            return {"local": local, "ray": remote,
                    "ndcg@10_gap_points": 100 * (remote["ndcg@10"] - local["ndcg@10"])}

        out = {"max_seconds": max_seconds, "num_workers": num_workers, **both(max_seconds)}
        if out["local"]["time_budget"] or out["ray"]["time_budget"]:
            out["untimed"] = {"max_seconds": UNTIMED_SECONDS, **both(UNTIMED_SECONDS)}
        vs.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if started_ray:
            ray.shutdown()
    return out


def _train_and_evaluate(vs: Any, data: Any, max_seconds: float, **engine: Any) -> dict[str, Any]:
    """One job on ``vs`` (it becomes the model search uses), its dev metrics and timings."""
    start = time.perf_counter()
    job = vs.deep_memory.train(queries=data.train_queries, relevance=data.train_relevance, max_seconds=max_seconds,
                               seed=0, **engine)
    status = vs.deep_memory.wait(job)
    wall = time.perf_counter() - start
    record = status["record"]
    if record.status != "completed":
        raise SystemExit(f"{engine['engine']} training ended {record.status}: {record.error}")
    dev = vs.deep_memory.evaluate(queries=data.test_queries, relevance=data.test_relevance, show=False)
    return {"engine": record.engine, "ndcg@10": dev["with model"]["ndcg@10"],
            "recall@10": dev["with model"]["recall@10"], "ndcg@10_without": dev["without model"]["ndcg@10"],
            "seconds": record.seconds, "wall_seconds": wall, "epochs": record.epoch,
            "best_epoch": vs.deep_memory.model().metadata.get("best_epoch"), "time_budget": record.time_budget}


def _rows(result: dict[str, Any], view: str) -> list[dict[str, Any]]:
    return [{"view": view, "engine": r["engine"], "ndcg@10": r["ndcg@10"], "recall@10": r["recall@10"],
             "train seconds": r["seconds"], "wall seconds": r["wall_seconds"], "epochs": r["epochs"],
             "best epoch": r["best_epoch"], "time budget": "cut" if r["time_budget"] else "not reached"}
            for r in (result["local"], result["ray"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder with corpus_emb.npy, queries_emb.npy, qrels/")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON path (default: the benchmarks' results folder)")
    args = parser.parse_args()
    result = compare(args.data, args.max_seconds, args.workers)
    rows = _rows(result, f"max_seconds={args.max_seconds:g}")
    if "untimed" in result:
        rows += _rows(result["untimed"], "untimed (same epochs)")
    print_table(f"Deep Memory training on {os.path.basename(os.path.normpath(args.data))}: local vs Ray "
                f"({args.workers} workers); dev nDCG@10 without a model "
                f"{result['local']['ndcg@10_without']:.4f}", rows, COLUMNS)
    gaps = [("same max_seconds", result["ndcg@10_gap_points"])]
    if "untimed" in result:
        gaps.append(("untimed", result["untimed"]["ndcg@10_gap_points"]))
    print_table("Target: Ray within 0.5 nDCG@10 points of local",
                [{"view": v, "gap (points)": g, "met": "yes" if abs(g) <= 0.5 else "NO"} for v, g in gaps],
                ["view", "gap (points)", "met"])
    write_json("dm_ray_training", result, args.out)


if __name__ == "__main__":
    main()
