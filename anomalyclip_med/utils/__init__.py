"""
Small shared helpers: atomic writes, the ``torchrun`` process group, quiet third-party logs, checks on output
locations.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "atomic": ("atomic_path",),
        "distributed": ("DistributedContext",),
        "console": ("NOISY_LOGGERS", "NOISY_WARNINGS", "quiet_third_party"),
        "paths": ("check_writable_dir", "check_outputs"),
    },
)
