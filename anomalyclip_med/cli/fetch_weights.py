"""``anomalyclip-med fetch-weights``: put every named weights file into one folder, for air-gapped machines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomalyclip_med.weights import WEIGHTS_DIR_ENV


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-weights",
        help="download the CLIP backbone and the authors' prompts into a folder to carry to an offline machine",
        description="Download the OpenAI CLIP ViT-L/14@336px file and the authors' trained prompts (mvtec-trained, "
        "visa-trained) into --dest, each verified against its published digest (files already there are "
        "verified, not downloaded again: run it on the offline machine to check a folder carried in). Then pass "
        f"--weights-dir DEST to any command or the bundle, or set {WEIGHTS_DIR_ENV}=DEST.",
    )
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to write the files into (created if needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomalyclip_med.errors import AnomalyCLIPMedError
    from anomalyclip_med.weights import download, registry, verify

    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        raise AnomalyCLIPMedError(f"--dest '{dest}' is a file, not a folder.")
    failed = 0
    for entry in registry().values():
        path = dest / entry.filename
        try:
            if path.is_file():
                verify(entry, path, remembered=False)
                state = "verified, already there"
            else:
                download(entry, dest, progress=not args.no_progress)
                state = "downloaded and verified"
        except AnomalyCLIPMedError as err:  # one file failing must not keep the others from the folder
            print(f"error: {entry.filename}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{entry.name}: {path} ({state}; {entry.hash_type} {entry.hash_val}); trained on {entry.trained_on}; "
              f"licence {entry.licence}")
    if failed:
        print(f"{failed} file(s) missing from {dest}; run again where their URLs can be reached.", file=sys.stderr)
        return 2
    print(f"all weights in {dest}: carry it to the offline machine and pass --weights-dir {dest} "
          f"(bundle: --weights_dir {dest}) or set {WEIGHTS_DIR_ENV}={dest}.")
    return 0
