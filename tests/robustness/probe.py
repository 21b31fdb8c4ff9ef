"""
Run as a child process by the robustness suite: read each given file with the package's public readers and print
one JSON line per file with the outcome (the value read, or the error's type and message). Many bad inputs are
tried in one process this way; a crash of the process (rather than a named error) fails the test.

Usage: ``python probe.py KIND:NAME:PATH ...`` with KIND one of image, mask, prompts, manifest.
"""

from __future__ import annotations

import json
import sys

from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.evaluation.manifest import read_manifest
from anomalyclip_med.io.images import read_image
from anomalyclip_med.io.masks import read_mask
from anomalyclip_med.network.checkpoint import read_prompt_checkpoint

READERS = {
    "image": lambda p: list(read_image(p).size),
    "mask": lambda p: int(read_mask(p).sum()),
    "prompts": lambda p: sorted(read_prompt_checkpoint(p)["state_dict"]),
    "manifest": lambda p: [c.case_id for c in read_manifest(p)],
}


def main(specs: list[str]) -> None:
    for spec in specs:
        kind, name, path = spec.split(":", 2)
        try:
            result = {"name": name, "ok": READERS[kind](path)}
        except AnomalyCLIPMedError as err:  # only the package's named errors count; anything else crashes the probe
            result = {"name": name, "error": type(err).__name__, "message": str(err)}
        print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
