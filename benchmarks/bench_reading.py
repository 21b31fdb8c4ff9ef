"""
What the whole-file checks cost: ``check_volume_file`` (format sniff, declared size, compressed stream read to its
end-of-stream marker) against the MONAI read that follows it, as a ratio measured in the same run.

Usage: ``python benchmarks/bench_reading.py [--repeats 5] [--out rows.json] [FILE ...]``; without files, the BraTS
volumes of ``../shared/data/volumes`` (when present) and a synthetic 256 x 256 x 160 float32 ``.nii.gz``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import NibabelReader
from monai.transforms import LoadImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_runs import save_rows  # noqa: E402

from anomalyclip_med.io.formats import check_volume_file  # noqa: E402
from anomalyclip_med.io.scans import volume_suffix  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes"


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the rows as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = list(args.files) or sorted(SHARED.glob("brats2018/*/*.nii.gz"))[:2]
        if not args.files:
            rng = np.random.default_rng(0)
            synthetic = Path(tmp) / "synthetic_256x256x160.nii.gz"
            nib.save(nib.Nifti1Image(rng.normal(0, 1, (256, 256, 160)).astype(np.float32), np.eye(4)), synthetic)
            files.append(synthetic)
        rows = []
        for path in files:
            suffix = volume_suffix(path)
            check = _median_seconds(lambda: check_volume_file(path, suffix), args.repeats)
            read = _median_seconds(lambda: LoadImage(image_only=True, dtype=np.float32)(str(path), reader=NibabelReader()),
                                   args.repeats)
            rows.append({"file": path.name, "bytes": path.stat().st_size, "check_s": round(check, 4),
                         "read_s": round(read, 4), "check_over_read": round(check / read, 3)})
            print(rows[-1])
    save_rows(rows, args.out)


if __name__ == "__main__":
    main()
