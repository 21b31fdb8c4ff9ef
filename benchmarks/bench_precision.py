"""
Speed and accuracy of each precision against fp32, on the same model and the same real slices in one process:
what ``--precision auto`` is chosen from (docs/network.md, "Precision").

The slices are axial slices of the BraTS FLAIR in ``../shared/data`` (through the package's own scan
preprocessing: MRI preset, radiological view, padded square, CLIP normalisation), so the maps compared are the
maps of real anatomy. Weights are random (ViT-L-14-336 architecture by default, seeded): speed does not depend on
their values, and the rounding error of a precision is a property of the architecture and the inputs.

Usage:
    python benchmarks/bench_precision.py                                   # CPU, 336 px, fp32 bf16 fp16, 2 slices
    python benchmarks/bench_precision.py --device cuda --size 518 --slices 32
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAIR = SHARED / "data" / "volumes" / "brats2018" / "case_0" / "FLAIR.nii.gz"


def network_inputs(model, count: int, size: int):
    """``count`` axial slices through the middle of the BraTS FLAIR as (count, 3, size, size) network inputs."""
    import torch

    from anomalyclip_med.transforms import LoadScan
    from anomalyclip_med.transforms.intensity import IntensityPreset
    from anomalyclip_med.transforms.slicing import SliceToNetworkInput

    image = LoadScan()(FLAIR)
    to_input = SliceToNetworkInput(size, None, model.mean, model.std)
    geometry = to_input.geometry(image)
    middle = geometry.n_slices // 2
    index = list(range(middle - count // 2, middle - count // 2 + count))
    choice = IntensityPreset("mri").choose(image)
    raw = image.as_tensor()[0].movedim(geometry.axis, 0)[torch.tensor(index)]
    return to_input.from_slices(torch.as_tensor(choice.transform(raw)), geometry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--slices", type=int, default=2, help="slices timed per precision (one batch)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    import torch

    from anomalyclip_med.network import ModelOptions, create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(ModelOptions(backbone=args.backbone, backbone_weights="none", image_size=args.size,
                                          device=args.device, precision="fp32", prompts="untrained"))
    batch = network_inputs(model, args.slices, args.size).to(model.device)
    rows, reference = [], None
    for precision in ["fp32", *[p for p in args.precisions if p != "fp32"]]:
        model.precision = precision  # the autocast dtype of the image tower, read at every forward
        model.predict(batch[:1])  # warm-up: kernels, allocator
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.predict(batch)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        maps, scores = out.anomaly_map.float().cpu(), out.image_score.float().cpu()
        reference = reference or (maps, scores, seconds)
        rows.append({
            "precision": precision, "device": str(model.device), "size": args.size, "slices": args.slices,
            "s_per_slice": round(seconds / args.slices, 3), "speed_vs_fp32": round(reference[2] / seconds, 2),
            "map_max_abs_diff": float((maps - reference[0]).abs().max()),
            "score_max_abs_diff": float((scores - reference[1]).abs().max()),
        })
        print(json.dumps(rows[-1]), flush=True)
    print("\n| precision | s/slice | speed vs fp32 | max abs map diff | max abs score diff |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['precision']} | {r['s_per_slice']:.3f} | {r['speed_vs_fp32']:.2f}x | "
              f"{r['map_max_abs_diff']:.1e} | {r['score_max_abs_diff']:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
