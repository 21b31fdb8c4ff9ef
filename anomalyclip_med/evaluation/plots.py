"""Cohort figures as PNG (matplotlib, Agg backend so no display is needed): ROC, PR, score histogram, montage."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from anomalyclip_med.evaluation.volumes import on_grid, read_mask_volume, read_volume, volume_array  # noqa: E402
from anomalyclip_med.utils.atomic import atomic_path  # noqa: E402

__all__ = ["plot_roc", "plot_pr", "plot_score_histogram", "plot_montage"]

_NEEDS_BOTH = "needs normal and anomalous\nlabelled scans"


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _labelled(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    ok = [r for r in records if r["status"] == "ok" and r["label"] is not None]
    return np.array([r["label"] for r in ok], dtype=int), np.array([r["scan_score"] for r in ok], dtype=float)


def _scan_panel(ax, records: list[dict], kind: str, summary: dict) -> None:
    labels, scores = _labelled(records)
    if labels.size and 0 < labels.sum() < labels.size:
        if kind == "roc":
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUROC {summary['auroc']:.3f}")
            ax.plot([0, 1], [0, 1], ":", color="grey")
        else:
            precision, recall, _ = precision_recall_curve(labels, scores)
            ax.plot(recall, precision, drawstyle="steps-pre", label=f"AP {summary['ap']:.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, _NEEDS_BOTH, ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"scan level ({labels.size} labelled scans)")


def _voxel_panel(ax, records: list[dict], kind: str) -> None:
    key, (x, y) = ("voxel_roc", ("fpr", "tpr")) if kind == "roc" else ("voxel_pr", ("recall", "precision"))
    curves = [(r["case_id"], r[key]) for r in records if r["status"] == "ok" and r.get(key)]
    for case_id, c in curves:
        ax.plot(c[x], c[y], lw=1, label=case_id if len(curves) <= 10 else None)
    if curves:
        if len(curves) <= 10:
            ax.legend(loc="lower right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no scans with lesion masks", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"voxel level, per scan ({len(curves)} with lesions)")


def _curve_figure(records, summary, kind, path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    _scan_panel(axes[0], records, kind, summary)
    _voxel_panel(axes[1], records, kind)
    xl, yl = ("false positive rate", "true positive rate") if kind == "roc" else ("recall", "precision")
    for ax in axes:
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xl, ylabel=yl)
    return _save(fig, path)


def plot_roc(records: list[dict], scan_summary: dict, path: str | os.PathLike) -> Path:
    """ROC curves: scan score against scan label (left) and each scan's voxel ROC (right)."""
    return _curve_figure(records, scan_summary, "roc", Path(path))


def plot_pr(records: list[dict], scan_summary: dict, path: str | os.PathLike) -> Path:
    """Precision-recall curves: scan level (left) and each scan's voxels (right)."""
    return _curve_figure(records, scan_summary, "pr", Path(path))


def plot_score_histogram(records: list[dict], path: str | os.PathLike) -> Path:
    """Histogram of scan scores, split into normal, anomalous and unlabelled scans."""
    ok = [r for r in records if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6, 4))
    scores = np.array([r["scan_score"] for r in ok], dtype=float)
    bins = np.linspace(scores.min(), scores.max() + 1e-9, 21) if scores.size else 20
    for value, name in ((0, "normal"), (1, "anomalous"), (None, "unlabelled")):
        group = [r["scan_score"] for r in ok if r["label"] == value]
        if group:
            ax.hist(group, bins=bins, alpha=0.6, label=f"{name} ({len(group)})")
    ax.set(xlabel="scan score", ylabel="scans", title="scan scores")
    if ok:
        ax.legend()
    return _save(fig, Path(path))


def plot_montage(records: list[dict], out_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """
    One panel per case of ``records`` (the worst misses): the key slice (largest lesion area) of the scan in grey,
    the anomaly map in colour, the lesion outline in green; the title gives the case, its scan score and Dice.
    Paths in the records are relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    n = max(len(records), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not records:
        axes[0, 0].text(0.5, 0.5, "no misses to show", ha="center", va="center")
    for ax, r in zip(axes.ravel(), records):
        amap_image = read_volume(out_dir / r["map"])
        z = r["key_slice"]
        amap = volume_array(amap_image)[z]
        scan_image = on_grid(read_volume(r["image"]), amap_image, nearest=False, name=f"Scan '{r['image']}'")
        scan = volume_array(scan_image)[z].astype(np.float32)
        lo, hi = np.percentile(scan, [1, 99])
        ax.imshow(scan, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        ax.imshow(amap, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        if r.get("mask"):
            mask_image = on_grid(read_mask_volume(r["mask"]), amap_image, nearest=True, name=f"Mask '{r['mask']}'")
            mask = volume_array(mask_image)[z] > 0
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="lime", linewidths=1)
        dice = "-" if r.get("dice") is None else f"{r['dice']:.2f}"
        ax.set_title(f"{r['case_id']}\nscore {r['scan_score']:.3f}  Dice {dice}  z={z}", fontsize=8)
    return _save(fig, Path(path))
