"""``anomalyclip-med score``: anomaly volumes for CT/MRI scans (NIfTI, NRRD, MetaImage, DICOM series)."""

from __future__ import annotations

import argparse

from anomalyclip_med.cli.options import (
    add_batch_options,
    add_model_options,
    add_scan_options,
    model_from_args,
    resume_mode,
    scan_options_from_args,
)
from anomalyclip_med.inference.batch import ScanBatchRunner
from anomalyclip_med.inference.scan import ScanScoringOptions
from anomalyclip_med.io.cases import find_cases



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score CT/MRI scans slice by slice",
        description="Write <case>_anomaly_map.nii.gz (float32 0..1), <case>_anomaly_seg.nii.gz (uint8 labelmap), "
        "<case>_scores.json and <case>_overlay.png per scan into --out, in the scan's own geometry. Folders are "
        "walked (sub-folders too) and their layout is kept below --out. A case that fails is reported and the "
        "others go on (exit 2 when any failed); --continue resumes an interrupted run.",
    )
    p.add_argument("inputs", nargs="+", metavar="SCAN_OR_FOLDER",
                   help="volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd), DICOM series folders, or folders "
                   "holding them (walked with their sub-folders)")
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_argument_group("scoring")
    add_scan_options(g)
    g.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    g.add_argument("--series-uid", default=None, help="SeriesInstanceUID to score in a folder with several series")
    g.add_argument("--volume-index", type=int, default=None, help="volume of a 4D file to score (0-based)")
    g.add_argument("--dicom-seg", action="store_true",
                   help="also write <case>_anomaly_seg.dcm, a DICOM SEG referencing the series (DICOM series "
                   "inputs only; others are refused before scoring starts)")
    add_batch_options(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> ScanScoringOptions:
    return scan_options_from_args(
        args, series_uid=args.series_uid, volume_index=args.volume_index, dicom_seg=args.dicom_seg,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    cases = find_cases(args.inputs, args.case_name, args.out)
    runner = ScanBatchRunner(cases, args.out, _options(args), resume_mode(args), progress=not args.no_progress)
    summary = runner.run(lambda: model_from_args(args))  # weights load only after every check passed
    return summary.exit_status
