"""
Run ``python -m MODULE ARGS`` and SIGKILL it at an exact moment of its writing, for the robustness suite.

Usage: ``python killer.py OP N FOLDER MODULE ARGS...``: right after the N-th call of ``os.OP`` (``replace`` or
``remove``) whose target lies under FOLDER, the process sends itself SIGKILL. The package runs unmodified; only
the moment of the (real, uncatchable) kill is chosen, e.g. between the renames that publish a case's outputs.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys


def main() -> None:
    op, n, folder, module, args = sys.argv[1], int(sys.argv[2]), os.path.realpath(sys.argv[3]), sys.argv[4], sys.argv[5:]
    real = getattr(os, op)
    count = 0

    def counted(path, *rest, **kwargs):
        nonlocal count
        result = real(path, *rest, **kwargs)
        target = os.path.realpath(os.fspath(rest[0] if rest else path))
        if target.startswith(folder + os.sep):
            count += 1
            if count == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(os, op, counted)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
