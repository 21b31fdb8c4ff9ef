"""
Cohort throughput: scans per second of ``anomalyclip-med score`` over N scans, against the network-only bound and
against the baseline commit, in one run.

The cohort is ``--copies`` copies each of the BraTS FLAIR volume (240x240x155, ../shared/data) and of the synthetic
512x512x300 CT of ``bench_scan.py``; ``--slices K`` crops every copy to K axial slices around its middle (a CPU
run cannot afford whole scans at ViT-L size; the crop keeps the in-plane size, so reading, resizing and writing per
slice are those of the real scans). Each configuration runs in a fresh process with a model of random weights
(speed does not depend on their values):

- **baseline**: the baseline commit's ``score`` loop (``score_scan`` per scan, one after the other);
- **sequential**: this checkout's stages (``prepare_scan`` -> ``compute_scan`` -> ``write_scan``) one after the
  other, in the calling thread;
- **pipelined**: this checkout's run engine (``CaseRunner`` with the scan job) as ``score`` runs it (reading ahead,
  writing behind).

For this checkout the table splits the time into stages: load (``load_volume``), preprocess (the rest of the host
preparation: preset, foreground, body mask), network (``predict``, device-synchronised), postprocess (the rest of
the device work: resampling back, smoothing, mask, threshold, the copy back) and write. In the pipelined run
these overlap, so they add up to more than the wall time. The **network-only bound** is ``predict`` alone on the
same slices (every scored slice of one copy of each scan, batched as in the run): seconds per cohort = sum over
scans of scored slices / (slices/s); the goal of issue 12 is pipelined throughput >= 95% of it on a CPU and
>= 80% on a GPU. On a machine whose load changes between runs, "network busy" (seconds inside ``predict`` / wall
seconds, both from the same run) gives the same fraction without comparing two runs.

Usage:
    python benchmarks/bench_cohort.py --slices 8 --threads 1            # CPU: ViT-L-14-336, 336 px, bf16
    python benchmarks/bench_cohort.py --device cuda --size 518 --batch 32 --copies 4   # whole scans on a GPU
    python benchmarks/bench_cohort.py --backbone ViT-B-16 --size 224 --slices 16       # a small backbone
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench_scan import BRATS, make_ct  # benchmarks/ is the script's folder
from child_runs import BASELINE_COMMIT, add_run_options, baseline_tree, child_main, run_child, save_rows

STAGES = ("load", "preprocess", "network", "postprocess", "write")


def _model(cfg: dict):
    import torch

    from anomalyclip_med import AnomalyCLIP

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyCLIP.from_pretrained(backbone=cfg["backbone"], backbone_weights=None, image_size=cfg["size"],
                                            device=cfg["device"], precision=cfg["precision"], prompts=None)
    model.predict(torch.zeros(1, 3, cfg["size"], cfg["size"]))  # warm-up: allocator, kernels
    return model


def _sync(cfg: dict) -> None:
    if cfg["device"].startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def baseline_child(cfg: dict) -> dict:
    """The baseline commit's ``score``: ``score_scan`` on each scan in turn."""
    from anomalyclip_med.inference.scan import ScanScoringOptions, score_scan

    model = _model(cfg)
    options = ScanScoringOptions(batch_size=cfg["batch"], progress=False)
    start = time.perf_counter()
    for scan in cfg["scans"]:
        score_scan(model, scan, cfg["out"], options)
    _sync(cfg)
    return {"wall_s": time.perf_counter() - start}


def _instrument(cfg: dict, model, seconds: dict[str, float]) -> None:
    """Add each call's wall seconds of reading a scan (``load_volume``) and of ``predict`` (device-synchronised)
    into ``seconds``."""
    from anomalyclip_med.inference import scan as scan_module

    load_volume, predict = scan_module.load_volume, model.predict

    def timed_load(*a, **k):
        t = time.perf_counter()
        try:
            return load_volume(*a, **k)
        finally:
            seconds["load"] += time.perf_counter() - t

    def timed_predict(*a, **k):
        t = time.perf_counter()
        out = predict(*a, **k)
        _sync(cfg)
        seconds["network"] += time.perf_counter() - t
        return out

    scan_module.load_volume = timed_load
    model.predict = timed_predict


def _network_bound(cfg: dict, model, scans: list[str]) -> dict:
    """Slices/s of ``predict`` alone on every scored slice of one copy of each scan, batched as in the run."""
    import torch
    from monai.utils import convert_to_tensor

    from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
    from anomalyclip_med.inference.scan import prepare_scan

    per_scan = {}
    for scan in dict.fromkeys(cfg["kinds"]):  # the first copy of each kind
        path = scans[cfg["kinds"].index(scan)]
        prepared = prepare_scan(path, Path(cfg["out"]) / "bound", ScoringOptions(batch_size=cfg["batch"]),
                                LoadingOptions(), OutputOptions(progress=False), model.config.image_size, model.mean,
                                model.std)
        plan = prepared.plan
        raw = prepared.image.as_tensor()[0].movedim(plan.geometry.axis, 0)
        todo = torch.from_numpy(np.flatnonzero(plan.scored))
        inputs = [plan.to_input.from_slices(convert_to_tensor(plan.preset.transform(raw[todo[i : i + cfg["batch"]]]),
                                                              track_meta=False), plan.geometry).to(cfg["device"])
                  for i in range(0, len(todo), cfg["batch"])]
        _sync(cfg)
        t = time.perf_counter()
        for batch in inputs:
            model.predict(batch)
        _sync(cfg)
        per_scan[scan] = {"slices": int(len(todo)), "seconds": time.perf_counter() - t}
    seconds = sum(per_scan[k]["seconds"] for k in cfg["kinds"])  # every copy costs what its first copy cost
    slices = sum(per_scan[k]["slices"] for k in cfg["kinds"])
    return {"bound_slices_per_s": slices / seconds, "bound_wall_s": seconds, "slices_per_cohort": slices}


def candidate_child(cfg: dict) -> dict:
    """This checkout: the stages in turn (``sequential``) or overlapped by the run engine (``pipelined``)."""
    from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
    from anomalyclip_med.io.cases import find_cases
    from anomalyclip_med.runs import DEFAULT_PREFETCH, CaseRunner, ScanJob

    model = _model(cfg)
    seconds = dict.fromkeys(STAGES, 0.0)
    _instrument(cfg, model, seconds)
    pipelined = cfg["mode"] == "pipelined"
    job = ScanJob(cfg["out"], ScoringOptions(batch_size=cfg["batch"]), output=OutputOptions(progress=False))
    runner = CaseRunner(find_cases(cfg["scans"], out_dir=cfg["out"]), cfg["out"], job, "overwrite", progress=False,
                        prefetch=DEFAULT_PREFETCH if pipelined else 0, background_write=pipelined, quiet=True)
    start = time.perf_counter()
    outcomes = runner.run(lambda ctx: job.bind(model)).results
    _sync(cfg)
    wall = time.perf_counter() - start
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"cases failed: {failed}")
    prepare = sum(o.seconds["prepare"] for o in outcomes)
    compute = sum(o.seconds["compute"] for o in outcomes)
    seconds["preprocess"] = prepare - seconds["load"]
    seconds["postprocess"] = compute - seconds["network"]
    seconds["write"] = sum(o.seconds["write"] for o in outcomes)
    result = {"wall_s": wall, **{f"{k}_s": v for k, v in seconds.items()}}
    if cfg["bound"]:
        result.update(_network_bound(cfg, model, cfg["scans"]))
    return result


def child(cfg: dict) -> dict:
    return (baseline_child if cfg["mode"] == "baseline" else candidate_child)(cfg)


def crop(path: str, slices: int | None, dest: Path) -> Path:
    """``path`` as NIfTI in ``dest``, cropped to ``slices`` slices around the middle of its last (axial) axis."""
    import nibabel as nib

    image = nib.load(path)
    if not slices or slices >= image.shape[2]:
        return Path(path)
    start = (image.shape[2] - slices) // 2
    nib.save(image.slicer[:, :, start : start + slices], dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2, help="copies of each scan in the cohort")
    parser.add_argument("--slices", type=int, default=None, help="crop each scan to this many axial slices")
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch", type=int, default=8, help="slices per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the children")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline commit")
    parser.add_argument("--no-sequential", action="store_true", help="skip the sequential run of this checkout")
    add_run_options(parser)
    args = parser.parse_args()
    if args.child:
        return child_main(child, args.child)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {"synthetic CT 512x512x300": make_ct(tmp / "ct_full.nii")}
        if BRATS.is_file():
            sources = {"BraTS FLAIR 240x240x155": BRATS, **sources}
        else:
            print(f"note: {BRATS} absent; BraTS FLAIR left out")
        scans, kinds = [], []
        for k, (name, path) in enumerate(sources.items()):
            cropped = crop(str(path), args.slices, tmp / f"kind{k}.nii.gz")
            for c in range(args.copies):
                copy = tmp / "cohort" / f"{k}_{c}{''.join(cropped.suffixes)}"
                copy.parent.mkdir(exist_ok=True)
                copy.write_bytes(cropped.read_bytes())
                scans.append(str(copy))
                kinds.append(name)
        base_cfg = {"scans": scans, "kinds": kinds, "backbone": args.backbone, "size": args.size,
                    "precision": args.precision, "batch": args.batch, "device": args.device, "threads": args.threads}
        modes = [m for m, skip in (("baseline", args.no_baseline), ("sequential", args.no_sequential),
                                   ("pipelined", False)) if not skip]
        rows = []
        for mode in modes:
            cfg = {**base_cfg, "mode": mode, "out": str(tmp / f"out_{mode}"), "bound": mode == "pipelined"}
            tree = baseline_tree(args.baseline) if mode == "baseline" else None
            row = run_child(__file__, cfg, tree)
            row = {k: v for k, v in row.items() if k not in ("scans", "kinds")}
            row["scans_per_s"] = len(scans) / row["wall_s"]
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("mode", "wall_s", "scans_per_s")}), flush=True)

    pipelined = rows[-1]
    bound_scans_per_s = len(scans) / pipelined["bound_wall_s"]
    for row in rows:
        row["fraction_of_bound"] = row["scans_per_s"] / bound_scans_per_s
    base = rows[0]["scans_per_s"] if rows[0]["mode"] == "baseline" else None
    import torch

    print(f"\n{len(scans)} scans ({args.copies} x {', '.join(sources)}; "
          f"{'cropped to ' + str(args.slices) + ' slices' if args.slices else 'whole'}; "
          f"{pipelined['slices_per_cohort']} slices scored), {args.backbone} (random weights), {args.size} px, "
          f"{args.precision}, batch {args.batch}, device {args.device}, threads {args.threads or 'default'}, "
          f"torch {torch.__version__}")
    print("| run | wall s | scans/s | x baseline | of network bound | network busy | "
          + " | ".join(f"{s} s" for s in STAGES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(STAGES))
    for r in rows:
        name = f"baseline {BASELINE_COMMIT} (score_scan loop)" if r["mode"] == "baseline" else r["mode"]
        ratio = f"{r['scans_per_s'] / base:.2f}" if base else "-"
        stages = " | ".join(f"{r[s + '_s']:.2f}" if s + "_s" in r else "-" for s in STAGES)
        busy = f"{r['network_s'] / r['wall_s']:.1%}" if "network_s" in r else "-"
        print(f"| {name} | {r['wall_s']:.2f} | {r['scans_per_s']:.4f} | {ratio} | {r['fraction_of_bound']:.0%} | "
              f"{busy} | {stages} |")
    print(f"| network-only bound (predict alone, same slices) | {pipelined['bound_wall_s']:.2f} | "
          f"{bound_scans_per_s:.4f} | {f'{bound_scans_per_s / base:.2f}' if base else '-'} | 100% | 100% | - | - | "
          f"{pipelined['bound_wall_s']:.2f} | - | - |")
    print("network busy: seconds inside predict / wall seconds of the same run (the bound measured within the run, "
          "immune to load that changes between runs)")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
