"""``anomalyclip-med score``: anomaly volumes for CT/MRI scans (NIfTI, NRRD, MetaImage, DICOM series)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from anomalyclip_med.cli.options import (
    add_calibration_options,
    add_model_options,
    add_scan_options,
    calibration_options_from_args,
    model_from_args,
    scan_options_from_args,
)
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError, OutputExistsError
from anomalyclip_med.inference.scan import ScanScoringOptions, expected_outputs, score_scan
from anomalyclip_med.io.scans import case_id_of, expand_sources
from anomalyclip_med.utils.paths import check_writable_dir



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score CT/MRI scans slice by slice",
        description="Write <case>_anomaly_map.nii.gz (float32 0..1), <case>_anomaly_seg.nii.gz (uint8 labelmap), "
        "<case>_scores.json and <case>_overlay.png per scan into --out, in the scan's own geometry.",
    )
    p.add_argument("inputs", nargs="+", metavar="SCAN_OR_FOLDER",
                   help="volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd), DICOM series folders, or folders "
                   "of volume files")
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_argument_group("scoring")
    add_scan_options(g)
    g.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    g.add_argument("--series-uid", default=None, help="SeriesInstanceUID to score in a folder with several series")
    g.add_argument("--volume-index", type=int, default=None, help="volume of a 4D file to score (0-based)")
    g.add_argument("--dicom-seg", action="store_true",
                   help="also write <case>_anomaly_seg.dcm, a DICOM SEG referencing the series (DICOM inputs; "
                   "ignored for files)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> ScanScoringOptions:
    return scan_options_from_args(
        args, series_uid=args.series_uid, volume_index=args.volume_index, overwrite=args.overwrite,
        dicom_seg=args.dicom_seg, progress=not args.no_progress,
    )


def _preflight(sources, args: argparse.Namespace) -> None:
    """Refuse the whole run, before loading any weights, for clashing names or outputs that exist."""
    clashing = [c for c, n in Counter(case_id_of(s) for s in sources).items() if n > 1]
    if clashing:
        raise InputError(f"Several inputs share the case name {clashing[0]!r} (outputs are <case>_...); score them "
                         "into separate --out folders.")
    check_writable_dir(args.out)
    outputs = [p for s in sources for p in expected_outputs(s, args.out, args.dicom_seg).values()]
    inputs = {s.resolve() for s in sources}
    overwritten = [p for p in outputs if p.resolve() in inputs]
    if overwritten:
        raise InputError(f"Output '{overwritten[0]}' would overwrite an input; choose another --out.")
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"Output '{existing[0]}' exists (and {len(existing) - 1} more); pass --overwrite.")


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    options.intensity_preset()  # bad options fail before the weights load
    sources = expand_sources(args.inputs)
    _preflight(sources, args)
    calibration = calibration_options_from_args(args)
    model = model_from_args(args)
    decision = calibration.decision("scans", model.identity(), options)
    if model.untrained_warning:
        print(model.untrained_warning)
    failed = 0
    for source in sources:
        try:
            result = score_scan(model, source, args.out, options, decision)
        except AnomalyCLIPMedError as err:  # one bad scan must not stop the others; each case is all-or-nothing
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        flag = "" if decision is None else (f", scan p-value {decision.p_values('scan', [result.scan_score])[0]:.4f}"
                                            f"{' FLAGGED' if decision.flags('scan', [result.scan_score])[0] else ''}")
        print(f"{result.case_id}: scan score {result.scan_score:.4f}{flag} ({result.scored_slices}/"
              f"{len(result.slice_scores)} slices scored, preset {result.preset}) -> {result.map_path.parent}")
    print(f"scored {len(sources) - failed} of {len(sources)} scan(s) into {args.out}")
    if model.untrained_warning:
        print(model.untrained_warning)
    return 2 if failed else 0
