"""
Names of the intensity presets and their CT windows: plain data, in a module without torch or MONAI, so that the
command line can list them in ``--help`` without importing either (the transforms are in
:mod:`anomalyclip_med.transforms.intensity`).
"""

from __future__ import annotations

__all__ = ["CT_WINDOWS", "PRESETS"]

# (level, width) in HU; the usual radiology windows (e.g. Radiopaedia, "Windowing (CT)")
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
PRESETS = ("auto", *CT_WINDOWS, "mri")
