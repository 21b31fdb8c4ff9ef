"""
Throughput and peak memory of AnomalyCLIP scoring, against the reference's way of running it.

Each configuration (image size x precision x batch size) runs in a fresh child process so that its peak memory
is its own: peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU. The baseline, measured in the same run
for each image size, is a batch-1 fp32 loop that recomputes the text features for every image, as the
authors' test script does. Weights are random (ViT-L-14-336 architecture by default): speed does not depend
on their values.

Usage:
    python benchmarks/bench_network.py                       # 336 and 518 px, fp32 and bf16, batch 1 and 8
    python benchmarks/bench_network.py --sizes 336 --images 8 --device cuda
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

from child_runs import child_main, run_child, save_rows  # benchmarks/ is the script's folder


def child(cfg: dict) -> dict:
    import torch

    from anomalyclip_med import AnomalyCLIP

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyCLIP.from_pretrained(
            backbone=cfg["backbone"], backbone_weights=None, image_size=cfg["size"], device=cfg["device"],
            precision=cfg["precision"], prompts="untrained",
        )
    cuda = cfg["device"].startswith("cuda")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batch = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=cfg["device"])

    def step():
        if cfg["baseline"]:  # the reference recomputes the (image-independent) text features per image
            model._text_features = None
        model.predict(batch)

    model.predict(batch[:1])  # warm-up: allocator, kernels
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    n_batches = max(1, cfg["images"] // cfg["batch"])
    start = time.perf_counter()
    for _ in range(n_batches):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "slices_per_s": n_batches * cfg["batch"] / seconds,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded,
    }
    if cuda:
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--sizes", type=int, nargs="+", default=[336, 518])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=int, default=8, help="images scored per configuration (>= batch)")
    parser.add_argument("--baseline-images", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(child, args.child)

    def run(**cfg) -> dict:
        return run_child(__file__, {"backbone": args.backbone, "device": args.device, **cfg})

    rows = []
    for size in args.sizes:
        base = run(size=size, precision="fp32", batch=1, images=args.baseline_images, baseline=True)
        rows.append({**base, "ratio": 1.0})
        for precision in args.precisions:
            for batch in args.batches:
                r = run(size=size, precision=precision, batch=batch, images=max(batch, args.images), baseline=False)
                rows.append({**r, "ratio": r["slices_per_s"] / base["slices_per_s"]})
    import torch

    print(f"backbone {args.backbone} (random weights), device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| size | precision | batch | text features | slices/s | x baseline | peak RSS MiB | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['precision']} | {r['batch']} | {'per image (reference)' if r['baseline'] else 'cached'} "
              f"| {r['slices_per_s']:.3f} | {r['ratio']:.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r.get('peak_gpu_mib', float('nan')):.0f} |")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
