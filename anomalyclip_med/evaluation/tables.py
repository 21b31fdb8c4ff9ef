"""Per-class metric tables in the layout of the paper's tables: Markdown (percent), CSV and JSON (fractions)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from anomalyclip_med.io.writers import write_csv, write_json
from anomalyclip_med.utils.atomic import atomic_path

__all__ = ["METRIC_COLUMNS", "finite_or_none", "table_rows", "write_metric_tables"]

# (key, heading); the paper's four first (image AUROC / AP, pixel AUROC / AUPRO), then the extra ones
METRIC_COLUMNS = (
    ("image_auroc", "image AUROC"),
    ("image_ap", "image AP"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "pixel AUPRO"),
    ("image_max_f1", "image max-F1"),
    ("pixel_ap", "pixel AP"),
    ("best_dice", "pixel best Dice"),
)


def finite_or_none(value):
    """A float, or None for NaN / missing (JSON has no NaN; reports show "-")."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _columns(metrics: tuple[str, ...] | None) -> list[tuple[str, str]]:
    return [(k, h) for k, h in METRIC_COLUMNS if metrics is None or k in metrics]


def table_rows(per_class: dict[str, dict], mean: dict, metrics: tuple[str, ...] | None = None) -> list[dict]:
    """One row per class then ``mean``: ``name`` followed by every metric column of ``metrics`` (default all; None
    where undefined)."""
    cols = _columns(metrics)
    rows = [{"name": name, **{k: finite_or_none(m.get(k)) for k, _ in cols}} for name, m in per_class.items()]
    return rows + [{"name": "mean", **{k: finite_or_none(mean.get(k)) for k, _ in cols}}]


def _markdown(rows: list[dict], title: str, metrics: tuple[str, ...] | None, note: str | None) -> str:
    # a column that no class has (image metrics of a pixel-level set, pixel metrics of an image-level one) is left
    # out, as the paper's tables do
    shown = [(k, h) for k, h in _columns(metrics) if any(r[k] is not None for r in rows)]
    lines = [f"# {title}", "", "| class | " + " | ".join(h for _, h in shown) + " |",
             "|---|" + "---:|" * len(shown)]
    for r in rows:
        cells = ["-" if r[k] is None else f"{100 * r[k]:.1f}" for k, _ in shown]
        name = f"**{r['name']}**" if r["name"] == "mean" else r["name"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = "\n\nValues in percent; '-' = undefined (one class only, or no masks).\n"
    return "\n".join(lines) + notes + (f"\nNote: {note}\n" if note else "")


def write_metric_tables(
    per_class: dict[str, dict], mean: dict, out_prefix: str | os.PathLike, title: str, extra: dict | None = None,
    metrics: tuple[str, ...] | None = None, note: str | None = None, appendix: str = "",
) -> dict[str, Path]:
    """
    Write ``<prefix>.md`` (paper layout, percent with one decimal), ``<prefix>.csv`` (fractions, full precision)
    and ``<prefix>.json`` (``{"title", "classes": {name: metrics}, "mean": metrics, **extra}``). ``metrics``
    limits the table columns to a protocol's metric set (the JSON keeps every metric); ``note`` is printed under
    the Markdown table, and ``appendix`` (Markdown) after it.

    Returns:
        the three paths by format.
    """
    prefix = Path(out_prefix)
    rows = table_rows(per_class, mean, metrics)
    paths = {ext: prefix.with_name(prefix.name + f".{ext}") for ext in ("md", "csv", "json")}
    with atomic_path(paths["md"]) as tmp:
        Path(tmp).write_text(_markdown(rows, title, metrics, note) + appendix, encoding="utf-8")
    write_csv(rows, paths["csv"])
    clean = {name: {k: finite_or_none(v) for k, v in m.items()} for name, m in per_class.items()}
    write_json({"title": title, "classes": clean, "mean": {k: finite_or_none(v) for k, v in mean.items()},
                **(extra or {})}, paths["json"])
    return paths
