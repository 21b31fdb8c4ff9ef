"""
Reading and writing file formats: volumes, DICOM series, 2D images and masks, overlays, NIfTI/JSON/CSV/DICOM
SEG outputs. The MONAI transforms that load and save through these live in :mod:`anomalyclip_med.transforms`.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "formats": ("describe_content", "check_volume_file", "DeclaredVolume"),
        "dicom": ("DICOM_SUFFIXES", "DicomSeries", "find_dicom_series", "select_dicom_series", "has_dicom_files"),
        "images": ("OPEN_ERRORS", "open_image", "to_rgb", "read_image"),
        "masks": (
            "MAX_LABEL_ID", "MAX_LABEL_LEVELS", "MAX_EDGE_FRACTION", "binarize_mask", "read_mask", "image_size_of"
        ),
        "names": (
            "NIFTI_SUFFIXES", "VOLUME_SUFFIXES", "IMAGE_SUFFIXES", "volume_suffix", "image_suffix", "case_id_of",
            "safe_case_id",
        ),
        "scans": ("load_volume", "as_scan"),
        "overlay": ("COLORMAP", "heatmap_overlay", "colour_bar", "save_png"),
        "writers": ("write_volume", "write_json", "write_csv", "write_montage", "write_dicom_seg", "dicom_seg_problem"),
        "cases": (
            "CASE_NAMING", "CASE_KINDS", "ScanCase", "OutputLayout", "find_cases", "datalist_cases", "name_cases",
            "input_fingerprint",
        ),
        "case_outputs": ("OUTPUT_FILES_KEY", "file_record", "write_case_outputs", "read_finished_case"),
    },
)
