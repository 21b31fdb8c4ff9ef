"""
Benchmark evaluation: the model over a dataset in its native layout, per-class image and pixel metrics and their
mean, sharded over ``torchrun`` processes and gathered into one report.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from anomalyclip_med.calibration import CalibratedDecision, operating_point
from anomalyclip_med.data import Sample
from anomalyclip_med.data.dataset import AnomalyDataset
from anomalyclip_med.evaluation.protocols import METRIC_SETS, dataset_note, default_metric_set
from anomalyclip_med.evaluation.tables import write_metric_tables
from anomalyclip_med.io.writers import write_csv
from anomalyclip_med.metrics import PixelMetricAccumulator, image_ap, image_auroc, image_max_f1
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.utils.distributed import DistributedContext

__all__ = ["subsample", "evaluate_samples", "dataset_metrics", "calibrated_operating_points", "write_dataset_report"]


def subsample(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most ``limit`` samples per class, evenly spaced over the class's (sorted) list so that normal and
    anomalous images both stay; all samples when ``limit`` is None."""
    if limit is None:
        return samples
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.cls_name].append(s)
    kept = set()
    for items in by_class.values():
        idx = np.unique(np.linspace(0, len(items) - 1, min(limit, len(items))).round().astype(int))
        kept.update(id(items[i]) for i in idx)
    return [s for s in samples if id(s) in kept]


def evaluate_samples(
    model: AnomalyCLIP,
    samples: list[Sample],
    ctx: DistributedContext | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[list[dict], dict[str, PixelMetricAccumulator]]:
    """
    Run the model over this process's share of ``samples`` and gather every process's results.

    Whole batches (``batch_size`` consecutive samples) are dealt round-robin to the processes, so each image is
    computed with the same batch companions as in one process and the gathered results are bit-identical.

    Args:
        model: the detector (in eval mode on its device).
        samples: the whole dataset (every process passes the same list).
        ctx: the distributed context; None for one process.
        batch_size, num_workers: the DataLoader's.
        progress: show a progress bar.

    Returns:
        ``(images, pixels)``: one record per sample in ``samples`` order (``index``, ``path``, ``cls_name``,
        ``label``, ``image_score``, ``map_max``), and per class that has masks a merged
        :class:`~anomalyclip_med.metrics.PixelMetricAccumulator` of its anomaly maps. Identical on every process
        and for any number of processes.
    """
    ctx = ctx or DistributedContext()
    masked = sorted({s.cls_name for s in samples if s.mask is not None})
    # whole batches go to the ranks, so every image is computed in the same batch as in one process: the
    # network's numbers depend (in the last bits) on what else is in the batch
    batches = [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    shard = [(i, samples[i]) for _, batch in ctx.shard(batches) for i in batch]
    records: list[dict] = []
    pixels = {c: PixelMetricAccumulator() for c in masked}
    if shard:
        dataset = AnomalyDataset([s for _, s in shard], model.config.image_size, model.mean, model.std)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
        indices = iter(i for i, _ in shard)
        for batch in tqdm(loader, desc=f"evaluating (rank {ctx.rank})", disable=not progress):
            out = model.predict(batch["image"].to(model.device))
            maps = out.anomaly_map
            for j, cls_name in enumerate(batch["cls_name"]):
                records.append({
                    "index": next(indices), "path": batch["path"][j], "cls_name": cls_name,
                    "label": int(batch["label"][j]), "image_score": float(out.image_score[j]),
                    "map_max": float(maps[j].max()),
                })
                if cls_name in pixels:
                    pixels[cls_name].update(batch["mask"][j, 0], maps[j])
    gathered = ctx.gather((records, pixels))
    images = sorted((r for recs, _ in gathered for r in recs), key=lambda r: r["index"])
    merged = {c: PixelMetricAccumulator() for c in masked}
    for _, acc in gathered:  # integer histograms: the merge order does not change the result
        for c, a in acc.items():
            merged[c].merge(a)
    return images, merged


def dataset_metrics(images: list[dict], pixels: dict[str, PixelMetricAccumulator]) -> tuple[dict, dict]:
    """
    Per-class metrics and their mean over classes (the paper's protocol).

    Returns:
        ``(per_class, mean)``: per class ``n_images``, ``n_anomalous``, ``image_auroc``, ``image_ap``,
        ``image_max_f1`` and, for classes with masks, ``pixel_auroc``, ``pixel_ap``, ``aupro``, ``best_dice``; NaN where a
        metric is undefined. ``mean`` averages each metric over the classes where it is defined.
    """
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        by_class[r["cls_name"]].append(r)
    per_class = {}
    for name, recs in by_class.items():
        labels = np.array([r["label"] for r in recs])
        scores = np.array([r["image_score"] for r in recs])
        m = {"n_images": len(recs), "n_anomalous": int(labels.sum()), "image_auroc": image_auroc(labels, scores),
             "image_ap": image_ap(labels, scores), "image_max_f1": image_max_f1(labels, scores)}
        if name in pixels:
            m.update(pixels[name].compute())
        per_class[name] = m
    mean = {}
    for k in ("image_auroc", "image_ap", "image_max_f1", "pixel_auroc", "pixel_ap", "aupro", "best_dice"):
        values = [m[k] for m in per_class.values() if k in m and not np.isnan(m[k])]
        mean[k] = float(np.mean(values)) if values else float("nan")
    mean["n_images"] = sum(m["n_images"] for m in per_class.values())
    mean["n_anomalous"] = sum(m["n_anomalous"] for m in per_class.values())
    return per_class, mean


def calibrated_operating_points(images: list[dict], decision: CalibratedDecision) -> dict[str, dict]:
    """
    Flag every image at the calibration's image threshold (adds ``p_value`` and ``flag`` to each record) and give
    the operating point per class and over ``all`` images: sensitivity and false-positive rate with their exact
    Clopper-Pearson intervals (:func:`~anomalyclip_med.calibration.operating_point`).
    """
    p = decision.p_values("image", [r["image_score"] for r in images]) if images else np.zeros(0)
    for record, value in zip(images, p):
        record["p_value"], record["flag"] = float(value), bool(value <= decision.target_fpr)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        groups[r["cls_name"]].append(r)
    groups["all"] = images
    return {name: operating_point([r["label"] for r in recs], [r["flag"] for r in recs], decision.target_fpr)
            for name, recs in groups.items()}


def _operating_markdown(points: dict[str, dict], decision: CalibratedDecision) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = ["", f"## Operating point at the calibrated image threshold (target false-positive rate "
             f"{decision.target_fpr:g}; calibration {decision.summary()['file']})", "",
             "| class | anomalous | sensitivity | 95% CI | normal | observed FPR | 95% CI |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, op in points.items():
        lo, hi = op["sensitivity_ci"]
        flo, fhi = op["fpr_ci"]
        lines.append(f"| {name} | {op['n_anomalous']} | {pct(op['sensitivity'])} | {pct(lo)}-{pct(hi)} | "
                     f"{op['n_normal']} | {pct(op['fpr'])} | {pct(flo)}-{pct(fhi)} |")
    return "\n".join(lines) + "\n\nRates in percent; intervals are exact (Clopper-Pearson).\n"


def write_dataset_report(
    images: list[dict], per_class: dict, mean: dict, out_dir: str | os.PathLike, dataset: str, extra: dict,
    metric_set: str | None = None, decision: CalibratedDecision | None = None,
) -> dict[str, Path]:
    """
    Write ``<dataset>_metrics.{md,csv,json}`` (per-class table and mean, in the columns of ``metric_set``: default
    the protocol the dataset comes from) and ``<dataset>_images.csv`` (every image's score) into ``out_dir``.
    With a calibration ``decision``, every image also gets its p-value and flag, and the report the operating
    point at the calibrated threshold beside the ranking metrics.

    Returns:
        the written paths by name.
    """
    out_dir = Path(out_dir)
    metric_set = metric_set or default_metric_set(dataset)
    extra = {**extra, "metric_set": metric_set, "note": dataset_note(dataset)}
    appendix = ""
    if decision is not None:
        points = calibrated_operating_points(images, decision)
        extra.update(calibration=decision.summary(), operating_point=points)
        appendix = _operating_markdown(points, decision)
    paths = write_metric_tables(per_class, mean, out_dir / f"{dataset}_metrics", f"{dataset}: zero-shot anomaly "
                                f"detection ({metric_set} metrics)", extra, METRIC_SETS[metric_set],
                                dataset_note(dataset), appendix)
    paths = {f"metrics_{k}": p for k, p in paths.items()}
    paths["images_csv"] = out_dir / f"{dataset}_images.csv"
    write_csv(images, paths["images_csv"])
    return paths
