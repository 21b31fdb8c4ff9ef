"""``anomalyclip-med score``: anomaly volumes for CT/MRI scans (NIfTI, NRRD, MetaImage, DICOM series)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import replace

from anomalyclip_med.cli.options import (
    add_calibration_options,
    add_model_options,
    add_scan_options,
    calibration_options_from_args,
    model_options_from_args,
    scoring_options_from_args,
)
from anomalyclip_med.errors import AnomalyCLIPMedError, InputError
from anomalyclip_med.inference.options import LoadingOptions, OutputOptions, ScoringOptions
from anomalyclip_med.inference.pipeline import ScanPipeline
from anomalyclip_med.inference.scan import expected_outputs
from anomalyclip_med.io.scans import case_id_of, expand_sources
from anomalyclip_med.network.factory import create_model, resolve_device
from anomalyclip_med.utils.distributed import DistributedContext
from anomalyclip_med.utils.paths import check_outputs


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
    g.add_argument("--batch-size", type=int, default=ScoringOptions.batch_size,
                   help=f"slices per forward pass (default {ScoringOptions.batch_size})")
    g.add_argument("--series-uid", default=LoadingOptions.series_uid,
                   help="SeriesInstanceUID to score in a folder with several series")
    g.add_argument("--volume-index", type=int, default=LoadingOptions.volume_index,
                   help="volume of a 4D file to score (0-based)")
    g.add_argument("--dicom-seg", action="store_true", default=OutputOptions.dicom_seg,
                   help="also write <case>_anomaly_seg.dcm, a DICOM SEG referencing the series (DICOM inputs; "
                   "ignored for files)")
    g.add_argument("--overwrite", action="store_true", default=OutputOptions.overwrite,
                   help="replace existing outputs")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=OutputOptions.progress,
                   help="no progress bar")
    add_calibration_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def _preflight(sources, out_dir, output: OutputOptions) -> None:
    """Refuse the whole run, before loading any weights, for clashing names or outputs that exist."""
    clashing = [c for c, n in Counter(case_id_of(s) for s in sources).items() if n > 1]
    if clashing:
        raise InputError(f"Several inputs share the case name {clashing[0]!r} (outputs are <case>_...); score them "
                         "into separate --out folders.")
    outputs = [p for s in sources for p in expected_outputs(s, out_dir, output.dicom_seg).values()]
    check_outputs(out_dir, outputs, sources, output.overwrite)


def _error_line(source, err: Exception) -> str:
    if isinstance(err, AnomalyCLIPMedError):  # these name the file and the fix already
        return f"error: {err}"
    return f"error: {case_id_of(source)} ({source}): {type(err).__name__}: {err}"


def run(args: argparse.Namespace) -> int:
    # every option is checked (by its dataclass) before any input is read or weights load
    scoring = scoring_options_from_args(args)
    loading = LoadingOptions(series_uid=args.series_uid, volume_index=args.volume_index)
    output = OutputOptions(overwrite=args.overwrite, dicom_seg=args.dicom_seg, progress=args.progress)
    calibration = calibration_options_from_args(args)
    model_options = model_options_from_args(args)
    sources = expand_sources(args.inputs)
    calibration.check("scans", scoring)
    _preflight(sources, args.out, output)
    # under torchrun each process scores every WORLD_SIZE-th scan (outputs are per case, so they do not meet)
    with DistributedContext.from_env(resolve_device(model_options.device)) as ctx:
        model = create_model(replace(model_options, device=str(ctx.device)))
        decision = calibration.decision("scans", model.identity(), scoring)
        if model.untrained_warning and ctx.is_main:
            print(model.untrained_warning)
        failed = 0
        # the next scans are read while the network scores one, and the previous one's outputs written;
        # one bad scan must not stop the others; each case is all-or-nothing
        pipeline = ScanPipeline(model, scoring, loading, output, decision=decision)
        for outcome in pipeline.run((source, args.out) for _, source in ctx.shard(sources)):
            if not outcome.ok:
                print(_error_line(outcome.item[0], outcome.error), file=sys.stderr)
                failed += 1
                continue
            result = outcome.result
            flag = "" if decision is None else (
                f", scan p-value {decision.p_values('scan', [result.scan_score])[0]:.4f}"
                + (" FLAGGED" if decision.flags("scan", [result.scan_score])[0] else ""))
            print(f"{result.case_id}: scan score {result.scan_score:.4f}{flag} ({result.scored_slices}/"
                  f"{len(result.slice_scores)} slices scored, preset {result.preset}) -> {result.map_path.parent}")
        failed = sum(ctx.gather(failed))
        if ctx.is_main:
            print(f"scored {len(sources) - failed} of {len(sources)} scan(s) into {args.out}"
                  + (f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""))
            if model.untrained_warning:
                print(model.untrained_warning)
        ctx.barrier()
    # rank 0 alone reports failed cases by its status: torchrun stops the other ranks as soon as one exits non-zero
    return 2 if failed and ctx.is_main else 0
