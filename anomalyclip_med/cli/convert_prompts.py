"""``anomalyclip-med convert-prompts``: a prompt checkpoint as a MONAI bundle's ``models/model.pt``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-prompts",
        help="convert a prompt checkpoint into the bundle network's state dict (models/model.pt)",
        description="Read a prompt checkpoint (the authors' released {'prompt_learner': ...} epoch_15.pth, or a "
        "file written by 'anomalyclip-med train') and write the state dict of the bundle's network_def "
        "(AnomalyCLIPNet: keys anomalyclip.prompt_learner.*), which MONAI's CheckpointLoader, ckpt_export and "
        "monai.bundle.load read.",
    )
    p.add_argument("prompts", help="prompt checkpoint to convert")
    p.add_argument("--out", required=True, help="file to write, e.g. bundles/anomalyclip_zeroshot/models/model.pt")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomalyclip_med.network.net import save_network_state  # torch: only when the command runs

    print(f"wrote {save_network_state(args.prompts, args.out, overwrite=args.overwrite)}")
    return 0
