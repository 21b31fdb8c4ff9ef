"""
Seconds per scan and peak memory of slice-wise scan scoring (what ``anomalyclip-med score`` does), with and
without empty-slice skipping, for the BraTS FLAIR volume (240x240x155, from ../shared/data) and a synthetic
512x512x300 CT (int16 NIfTI in HU, made here: a body of ~80% of the slices, air above and below).

Each configuration runs in a fresh child process so its peak RSS (``ru_maxrss``) is its own. A child builds the
model (ViT-L-14-336 architecture, random weights: speed does not depend on their values), loads the scan with
``LoadScan``, times the per-scan preparation (intensity preset, foreground test) with zero slices, scores
``--slices`` slices (evenly spread over the slices the full scan would score) and writes the map and labelmap.
Seconds per scan = load + preparation + (seconds per slice x slices the full scan scores) + writing; with
``--quick`` the slice term is EXTRAPOLATED from the slices measured, and the table says so.

Bounded memory: every scan and skip setting runs with two slice counts (--quick: 1 and 3); the inference part of
the peak (peak RSS - RSS after the scan is loaded) must not grow with the slice count. For comparison the table
gives the size of all slices' network inputs held at once (what streaming avoids). When extrapolating, the map
of every slice the full scan would score is filled with the measured slices' maps before writing, so the
writing time and the peak memory are those of a full map.

Usage:
    python benchmarks/bench_scan.py --quick                    # 1 and 3 slices per configuration (CPU friendly)
    python benchmarks/bench_scan.py --slices all --device cuda # every slice, measured
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from child_runs import child_main, run_child, save_rows  # benchmarks/ is the script's folder

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_ct(path: Path, shape=(512, 512, 300)) -> Path:
    """A CT-like int16 NIfTI in HU: an elliptic body cylinder (soft tissue, bone rim, two lesions) in air."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    r = (x / 0.75) ** 2 + (y / 0.55) ** 2
    body = np.where(r <= 1, 40, -1000).astype(np.int16)
    body[(r > 0.85) & (r <= 1)] = 700
    vol = np.empty(shape, dtype=np.int16)
    z0, z1 = int(0.1 * shape[2]), int(0.9 * shape[2])
    for k in range(shape[2]):
        vol[:, :, k] = body if z0 <= k < z1 else -1000
    vol[300:330, 250:280, 140:160] = 90
    vol[180:200, 200:215, 100:110] = -20
    vol += rng.integers(-10, 10, shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([0.7, 0.7, 1.0, 1.0])), path)
    return path


def child(cfg: dict) -> dict:
    import torch

    from anomalyclip_med import AnomalyCLIP
    from anomalyclip_med.inference.slices import score_slices
    from anomalyclip_med.transforms import LoadScan
    from anomalyclip_med.io.writers import write_volume
    from anomalyclip_med.transforms.intensity import IntensityPreset
    from anomalyclip_med.transforms.slicing import SliceForeground, SliceToNetworkInput

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyCLIP.from_pretrained(backbone=cfg["backbone"], backbone_weights=None, image_size=cfg["size"],
                                            device=cfg["device"], precision=cfg["precision"],
                                            prompts=None)  # untrained, in this tree and the baseline
    cuda = cfg["device"].startswith("cuda")
    rss_model = _rss_mib()
    start = time.perf_counter()
    image = LoadScan()(cfg["path"])
    t_load = time.perf_counter() - start
    rss_scan = _rss_mib()
    preset = IntensityPreset("auto")
    geometry = SliceToNetworkInput(cfg["size"]).geometry(image)
    to_score = (np.flatnonzero(SliceForeground()(image).numpy()) if cfg["skip_empty"]
                else np.arange(geometry.n_slices))
    count = len(to_score) if cfg["slices"] == "all" else min(int(cfg["slices"]), len(to_score))
    chosen = to_score[np.round(np.linspace(0, len(to_score) - 1, count)).astype(int)]

    def run(indices):
        t = time.perf_counter()
        result = score_slices(model, image, preset, batch_size=cfg["batch"], skip_empty=cfg["skip_empty"],
                              slice_indices=indices)
        if cuda:
            torch.cuda.synchronize()
        return result, time.perf_counter() - t

    _, t_prep = run([])  # per-scan work only: preset percentiles, foreground threshold
    model.predict(torch.zeros(1, 3, cfg["size"], cfg["size"]))  # warm-up: allocator, kernels
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result, t_run = run(chosen)
    per_slice = max(t_run - t_prep, 0.0) / max(count, 1)
    if count < len(to_score):  # a full scan's map: repeat the measured slices' maps over every scored slice
        maps = np.moveaxis(result.anomaly_map, geometry.axis, 0)
        maps[to_score] = maps[chosen][np.arange(len(to_score)) % count]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_volume(result.anomaly_map, image.meta, Path(tmp) / "map.nii.gz")
        write_volume((result.anomaly_map >= 0.5).astype(np.uint8), image.meta, Path(tmp) / "seg.nii.gz", label=True)
        t_write = time.perf_counter() - t
    out = {
        "shape": list(image.shape[1:]),
        "n_slices": geometry.n_slices,
        "slices_full_scan": int(len(to_score)),
        "slices_measured": int(count),
        "extrapolated": bool(count < len(to_score)),
        "load_s": t_load,
        "prep_s": t_prep,
        "s_per_slice": per_slice,
        "write_s": t_write,
        "s_per_scan": t_load + t_prep + per_slice * len(to_score) + t_write,
        "rss_after_model_mib": rss_model,
        "rss_after_scan_mib": rss_scan,
        "peak_rss_mib": _rss_mib(),
        "all_inputs_at_once_mib": len(to_score) * 3 * cfg["size"] ** 2 * 4 / 2**20,
        "map_mib": result.anomaly_map.nbytes / 2**20,
    }
    if cuda:
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="score 1 and 3 slices per configuration")
    parser.add_argument("--slices", nargs="+", default=None,
                        help="slice counts to measure per configuration, or 'all' (default: all; --quick: 1 3)")
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch", type=int, default=1, help="slices per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(child, args.child)
    counts = args.slices or (["1", "3"] if args.quick else ["all"])

    with tempfile.TemporaryDirectory() as tmp:
        scans = {"synthetic CT 512x512x300": str(make_ct(Path(tmp) / "ct.nii"))}
        if BRATS.is_file():
            scans = {"BraTS FLAIR 240x240x155": str(BRATS), **scans}
        else:
            print(f"note: {BRATS} absent; BraTS FLAIR skipped")
        rows = []
        for name, scan in scans.items():
            for skip in (True, False):
                for count in counts:
                    cfg = {"path": scan, "skip_empty": skip, "slices": count, "backbone": args.backbone,
                           "size": args.size, "precision": args.precision, "batch": args.batch, "device": args.device}
                    row = {"scan": name, **run_child(__file__, cfg)}
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("scan", "skip_empty", "slices_measured", "s_per_slice",
                                                           "s_per_scan", "peak_rss_mib")}), flush=True)

    import torch

    print(f"\n{args.backbone} (random weights), {args.size} px, {args.precision}, batch {args.batch}, device "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| scan | skip empty | slices scored / in scan | measured | s/slice | s/scan | peak RSS MiB | "
          "peak - after scan load MiB | map MiB | all inputs at once MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kind = "EXTRAPOLATED" if r["extrapolated"] else "measured"
        print(f"| {r['scan']} | {'yes' if r['skip_empty'] else 'no'} | {r['slices_full_scan']} / {r['n_slices']} | "
              f"{r['slices_measured']} slices | {r['s_per_slice']:.2f} | {r['s_per_scan']:.0f} ({kind}) | "
              f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['rss_after_scan_mib']:.0f} | {r['map_mib']:.0f} | "
              f"{r['all_inputs_at_once_mib']:.0f} |")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
