"""
Throughput and peak memory of AnomalyCLIP scoring, against the reference's way of running it and against the
baseline commit, plus the CPU speed-up attempts of issue 12 (torch.compile, bf16 weights, channels-last, threads).

Each configuration (image size x precision x batch size x variant) runs in a fresh child process so that its peak
memory is its own: peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU. Measured in the same run for each
image size: the reference's way (a batch-1 fp32 loop that recomputes the text features for every image, as the
authors' test script does), and every configuration once more with the package of the baseline commit (a git
worktree; see ``child_runs.baseline_tree``). Weights are random (ViT-L-14-336 architecture by default): speed does
not depend on their values.

Variants (``--variants``; each compared with ``eager`` of the same configuration in the same run, and checked
against ``eager``'s outputs on the same batch in the same process):
    eager          this checkout as ``score`` runs it
    compile        ``--compile`` (``torch.compile`` of the image tower); its compilation time is reported apart
    bf16-weights   the image tower's weights cast to bfloat16 once (instead of autocast casting them every call)
    channels-last  the patch convolution and its input in channels-last layout
    threads=N      eager with N intra-op threads

Usage:
    python benchmarks/bench_network.py                       # 336 and 518 px, fp32 and bf16, batch 1 and 8
    python benchmarks/bench_network.py --sizes 336 --precisions bf16 --batches 1 --images 4 --threads 1 \
        --variants eager compile bf16-weights channels-last threads=2
    python benchmarks/bench_network.py --sizes 518 --images 64 --batches 32 --precisions bf16 --device cuda
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

from child_runs import BASELINE_COMMIT, add_run_options, baseline_tree, child_main, run_child, save_rows

VARIANTS = ("eager", "compile", "bf16-weights", "channels-last")


def child(cfg: dict) -> dict:
    import torch

    from anomalyclip_med import AnomalyCLIP

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    variant = cfg.get("variant", "eager")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyCLIP.from_pretrained(
            backbone=cfg["backbone"], backbone_weights=None, image_size=cfg["size"], device=cfg["device"],
            precision=cfg["precision"], prompts=None,  # untrained, in this tree and the baseline
        )
    cuda = cfg["device"].startswith("cuda")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batch = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=cfg["device"],
                        generator=torch.Generator(cfg["device"]).manual_seed(1))
    result = {}
    if variant != "eager":  # the eager outputs on the same batch, to check the variant against
        reference = model.predict(batch)
        if variant == "compile":
            model._image_tower = torch.compile(model._image_tower, dynamic=False)
        elif variant == "bf16-weights":
            model.clip.visual.to(torch.bfloat16)
        elif variant == "channels-last":
            model.clip.visual.conv1.to(memory_format=torch.channels_last)
            batch = batch.contiguous(memory_format=torch.channels_last)
        else:
            raise SystemExit(f"unknown variant {variant!r}")

    def step():
        if cfg["baseline"]:  # the reference recomputes the (image-independent) text features per image
            model._text_features = None
        return model.predict(batch)

    start = time.perf_counter()
    first = model.predict(batch[:1] if variant != "compile" else batch)  # warm-up: allocator, kernels, compilation
    if cuda:
        torch.cuda.synchronize()
    result["warmup_s"] = time.perf_counter() - start
    if variant != "eager":
        out = model.predict(batch)
        result["max_map_diff"] = float((out.anomaly_map - reference.anomaly_map).abs().max())
        result["max_score_diff"] = float((out.image_score - reference.image_score).abs().max())
    del first
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
    result.update({
        "slices_per_s": n_batches * cfg["batch"] / seconds,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded,
        "torch_threads": torch.get_num_threads(),
    })
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
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of every child (default: torch's)")
    parser.add_argument("--variants", nargs="+", default=["eager"],
                        help=f"this checkout's variants: {', '.join(VARIANTS)}, threads=N")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference's batch-1 fp32 loop")
    parser.add_argument("--no-baseline", action="store_true", help=f"skip the baseline commit {BASELINE_COMMIT}")
    add_run_options(parser)
    args = parser.parse_args()
    if args.child:
        return child_main(child, args.child)

    def run(tree=None, variant="eager", **cfg) -> dict:
        threads = args.threads
        if variant.startswith("threads="):
            variant, threads = "eager", int(variant.split("=", 1)[1])
        cfg = {"backbone": args.backbone, "device": args.device, "threads": threads, "variant": variant, **cfg}
        row = run_child(__file__, cfg, tree)
        print({k: row[k] for k in ("size", "precision", "batch", "variant", "slices_per_s")}, flush=True)
        return row

    baseline = None if args.no_baseline else baseline_tree(args.baseline)
    rows = []
    for size in args.sizes:
        reference = None
        if not args.no_reference:
            reference = run(size=size, precision="fp32", batch=1, images=args.baseline_images, baseline=True)
            rows.append({**reference, "code": "reference loop", "ratio": 1.0})
        for precision in args.precisions:
            for batch in args.batches:
                common = {"size": size, "precision": precision, "batch": batch, "images": max(batch, args.images),
                          "baseline": False}
                base = run(baseline, **common) if baseline else None
                if base:
                    rows.append({**base, "code": f"baseline {BASELINE_COMMIT}"})
                eager = None
                for variant in args.variants:
                    r = run(variant=variant, **common)
                    r["code"] = "this checkout" + ("" if variant == "eager" else f", {variant}")
                    eager = r if variant == "eager" else eager
                    r["x_eager"] = r["slices_per_s"] / eager["slices_per_s"] if eager else None
                    rows.append(r)
                for r in rows:
                    if r.get("size") == size and r.get("precision") == precision and r.get("batch") == batch:
                        r["x_commit"] = r["slices_per_s"] / base["slices_per_s"] if base else None
        for r in rows:
            if r["size"] == size and reference:
                r["ratio"] = r["slices_per_s"] / reference["slices_per_s"]
    import torch

    print(f"\nbackbone {args.backbone} (random weights), device {args.device}, torch {torch.__version__}, threads "
          f"{args.threads or 'default'}")
    print(f"| size | precision | batch | code | slices/s | x reference loop | x {BASELINE_COMMIT} | x eager | "
          "warm-up s | max map diff vs eager | peak RSS MiB | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for r in rows:
        print(f"| {r['size']} | {r['precision']} | {r['batch']} | {r['code']}"
              f"{' (text features per image)' if r['baseline'] else ''} | {r['slices_per_s']:.3f} | "
              f"{fmt(r.get('ratio'), '.2f')} | {fmt(r.get('x_commit'), '.2f')} | {fmt(r.get('x_eager'), '.2f')} | "
              f"{r['warmup_s']:.1f} | {fmt(r.get('max_map_diff'), '.1e')} | {r['peak_rss_mib']:.0f} | "
              f"{fmt(r.get('peak_gpu_mib'), '.0f')} |")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
