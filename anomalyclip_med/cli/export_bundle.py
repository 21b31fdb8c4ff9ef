"""``anomalyclip-med export-bundle``: package the MONAI bundle with trained prompts as one zip file."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

from anomalyclip_med.errors import InputError
from anomalyclip_med.utils.atomic import atomic_path

# run outputs and caches that never belong in a packaged bundle
_SKIP_DIRS = {"output", "eval", "__pycache__", ".ipynb_checkpoints"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-bundle",
        help="package a bundle folder and a prompt checkpoint into a MONAI bundle zip",
        description="Zip BUNDLE (configs, docs, LICENSE, large_files.yml, sample data) under its folder name, "
        "with the prompt checkpoint (the authors' or this package's format) converted to the network's state dict "
        "as models/model.pt, which the bundle's configs load with MONAI's CheckpointLoader. The CLIP "
        "backbone is not included: large_files.yml says where it comes from.",
    )
    p.add_argument("--bundle", required=True, help="bundle folder (holding configs/metadata.json)")
    p.add_argument("--prompts", required=True, help="prompt checkpoint to ship as models/model.pt")
    p.add_argument("--out", required=True, help="zip file to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def export_bundle(bundle: str | Path, prompts: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """
    Write the bundle zip (MONAI's archive layout: ``<name>/configs/...``, ``<name>/models/model.pt``), the prompts
    as the state dict of the bundle's network (:func:`anomalyclip_med.network.net.network_state`).
    """
    import torch  # heavy imports only when the command runs

    from anomalyclip_med.network.net import network_state

    bundle = Path(bundle)
    if not (bundle / "configs" / "metadata.json").is_file():
        raise InputError(f"'{bundle}' is not a MONAI bundle folder: configs/metadata.json is missing.")
    state = io.BytesIO()
    torch.save(network_state(prompts), state)  # refuses a file that is not a prompt checkpoint before writing
    name = bundle.resolve().name
    with atomic_path(out, overwrite=overwrite) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(bundle.rglob("*")):
            rel = path.relative_to(bundle)
            if path.is_file() and not _SKIP_DIRS & set(rel.parts) and rel.parts[0] != "models":
                z.write(path, f"{name}/{rel.as_posix()}")
        z.writestr(f"{name}/models/model.pt", state.getvalue())
    return Path(out)


def run(args: argparse.Namespace) -> int:
    out = export_bundle(args.bundle, args.prompts, args.out, args.overwrite)
    print(f"wrote {out}")
    return 0
