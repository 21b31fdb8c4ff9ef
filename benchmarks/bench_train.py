"""
Training speed and peak memory: optimiser steps per second of the full AnomalyCLIP objective (image tower
forward, text tower forward and backward, the four pixel maps and their losses, Adam step), fp32 against bf16
autocast of the image tower, measured in the same run.

Each configuration runs in a fresh child process so that its peak memory is its own: peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU. Weights are random (ViT-L-14-336 architecture by default): speed
does not depend on their values. The batch holds random images with a square "defect" mask on half of them.

Usage:
    python benchmarks/bench_train.py --quick                 # CPU: batch 1, 1 warm-up + 1 timed step per precision
    python benchmarks/bench_train.py --quick --threads 1     # steadier on a CPU shared with other jobs
    python benchmarks/bench_train.py --device cuda --batch 8 --steps 10
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
    from anomalyclip_med.training import compute_losses, make_optimizer

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    load_start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyCLIP.from_pretrained(
            backbone=cfg["backbone"], backbone_weights=None, image_size=cfg["size"], device=cfg["device"],
            precision=cfg["precision"], prompts=None,  # untrained, in this tree and the baseline
        )
    load_seconds = time.perf_counter() - load_start
    cuda = cfg["device"].startswith("cuda")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    b, s = cfg["batch"], cfg["size"]
    images = torch.randn(b, 3, s, s, device=cfg["device"])
    masks = torch.zeros(b, 1, s, s, device=cfg["device"])
    masks[::2, :, s // 4: s // 2, s // 4: s // 2] = 1
    labels = (torch.arange(b, device=cfg["device"]) % 2 == 0).long()
    optimizer = make_optimizer(model)
    model.train()

    def step() -> float:
        losses = compute_losses(model, images, masks, labels)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        return losses["total"].item()  # synchronises on GPU

    first_start = time.perf_counter()
    for _ in range(cfg["warmup"]):
        step()
    first_seconds = time.perf_counter() - first_start
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        step()
    seconds = time.perf_counter() - start
    result = {
        "steps_per_s": cfg["steps"] / seconds,
        "images_per_s": cfg["steps"] * b / seconds,
        "seconds": seconds,
        "warmup_seconds": first_seconds,
        "load_seconds": load_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded,
        "threads": torch.get_num_threads(),
    }
    if cuda:
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="the first one is the baseline")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--quick", action="store_true", help="batch 1, 1 warm-up step, 1 timed step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(child, args.child)
    if args.quick:
        args.batch, args.steps, args.warmup = 1, 1, 1

    def run(precision: str) -> dict:
        cfg = {"backbone": args.backbone, "device": args.device, "size": args.size, "precision": precision,
               "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
        return run_child(__file__, cfg)

    rows = [run(p) for p in args.precisions]
    for r in rows:
        r["ratio"] = r["steps_per_s"] / rows[0]["steps_per_s"]
    import torch

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {rows[0]['threads']} threads"
    print(f"backbone {args.backbone} (random weights), {args.size} px, batch {args.batch}, {args.steps} timed "
          f"step(s) after {args.warmup} warm-up, {device}, torch {torch.__version__}")
    print("| precision | steps/s | images/s | x fp32 | s/step | first step s | peak RSS MiB | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['steps_per_s']:.4f} | {r['images_per_s']:.4f} | {r['ratio']:.2f} | "
              f"{r['seconds'] / r['steps']:.1f} | {r['warmup_seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r.get('peak_gpu_mib', float('nan')):.0f} |")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
