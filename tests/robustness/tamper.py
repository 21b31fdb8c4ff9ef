"""
Run ``python -m MODULE ARGS`` and replace a scan with another file right after the scan was read, for the
robustness suite.

Usage: ``python tamper.py SCAN OTHER MODULE ARGS...``: the first time the package's scan reader
(``anomalyclip_med.io.scans.load_volume``, as the scan stage calls it) returns SCAN, a copy of OTHER is renamed
over SCAN (a newer modification time), as a file replaced by a PACS export during a run. The package runs
unmodified; only the moment of the replacement is chosen.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys


def main() -> None:
    scan, other, module, args = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    import anomalyclip_med.inference.scan as stage

    real = stage.load_volume
    done = False

    def load_then_replace(source, *rest, **kwargs):
        nonlocal done
        volume = real(source, *rest, **kwargs)
        if not done and os.path.abspath(source) == scan:
            done = True
            shutil.copyfile(other, scan + ".new")
            st = os.stat(scan)
            os.utime(scan + ".new", ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
            os.replace(scan + ".new", scan)
        return volume

    stage.load_volume = load_then_replace
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
