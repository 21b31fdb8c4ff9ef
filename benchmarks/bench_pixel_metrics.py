"""
Pixel metrics over many 518 x 518 maps: the streaming accumulator against the reference's way (all maps held in
memory, scikit-learn's pixel AUROC on every pixel, and the reference's AUPRO loop over regions and thresholds).

Each method runs in a fresh child process so that its peak memory (peak RSS) is its own. Maps are smooth random
fields with random disc "defects", made per batch from a seed, so the streaming method never holds them all.

Usage:
    python benchmarks/bench_pixel_metrics.py            # 400 maps
    python benchmarks/bench_pixel_metrics.py --quick    # 60 maps
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZE = 518


def make_batch(seed: int, n: int):
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            cy, cx, r = *rng.integers(60, SIZE - 60, 2), rng.integers(8, 50)
            masks[i] |= ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    maps = gaussian_filter(rng.random((n, SIZE, SIZE), dtype=np.float32), (0, 8, 8)) * 4
    maps += 0.15 * gaussian_filter(masks.astype(np.float32), (0, 6, 6))
    return masks, np.clip(maps - maps.mean() + 0.5, 0, 1).astype(np.float32)


def reference_aupro(masks, amaps, max_step=200, expect_fpr=0.3):
    """The reference's loop, re-expressed (thresholds x regions): the baseline's cost."""
    import numpy as np
    from skimage import measure
    from sklearn.metrics import auc

    lo, hi = amaps.min(), amaps.max()
    regions = [(i, r.coords) for i, m in enumerate(masks) for r in measure.regionprops(measure.label(m))]
    inverse = masks == 0
    pros, fprs = [], []
    for th in np.arange(lo, hi, (hi - lo) / max_step):
        binary = amaps > th
        pros.append(np.mean([binary[i][c[:, 0], c[:, 1]].mean() for i, c in regions]))
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < expect_fpr
    f = fprs[keep]
    return auc((f - f.min()) / (f.max() - f.min()), pros[keep])


def child(method: str, n: int, batch: int) -> dict:
    import numpy as np

    from anomalyclip_med.metrics import PixelMetricAccumulator, aupro, pixel_auroc

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # libraries loaded, no data yet
    start = time.perf_counter()
    if method == "streaming":
        acc = PixelMetricAccumulator()
        for b in range(0, n, batch):
            acc.update(*make_batch(b, min(batch, n - b)))
        result = {"pixel_auroc": acc.auroc(), "aupro": acc.aupro(), "auroc_error_bound": acc.auroc_error_bound()}
    else:
        parts = [make_batch(b, min(batch, n - b)) for b in range(0, n, batch)]
        masks = np.concatenate([p[0] for p in parts])
        maps = np.concatenate([p[1] for p in parts]).astype(np.float64)  # the reference keeps float64 arrays
        del parts
        if method == "exact":
            result = {"pixel_auroc": pixel_auroc(masks, maps), "aupro": aupro(masks, maps)}
        else:
            from sklearn.metrics import roc_auc_score

            result = {"pixel_auroc": roc_auc_score(masks.ravel(), maps.ravel()), "aupro": reference_aupro(masks, maps)}
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["data_rss_mib"] = result["peak_rss_mib"] - imported  # what the method itself needed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="60 maps")
    parser.add_argument("--methods", default="reference,exact,streaming")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = 60 if args.quick else args.maps
    if args.child:
        print(json.dumps(child(args.child, n, args.batch)))
        return
    results = {}
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--child", method, "--maps", str(n), "--batch", str(args.batch)]
        results[method] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(method, json.dumps(results[method]), flush=True)
    base = results.get("reference") or results.get("exact")
    print(f"\n{n} maps of {SIZE}x{SIZE}")
    name = "reference" if "reference" in results else "exact"
    print(f"| method | pixel AUROC | AUPRO | seconds | peak RSS MiB | RSS above imports MiB | time vs {name} | "
          f"memory above imports vs {name} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, r in results.items():
        print(f"| {method} | {r['pixel_auroc']:.6f} | {r['aupro']:.6f} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {r['data_rss_mib']:.0f} | {r['seconds'] / base['seconds']:.2f} | "
              f"{r['data_rss_mib'] / base['data_rss_mib']:.2f} |")


if __name__ == "__main__":
    main()
