"""
Small shared helpers: atomic writes, the output-folder lock, the ``torchrun`` process group, quiet third-party logs, checks on output
locations.

Every public name of the submodules is exported here; each submodule is imported on first use.
"""

from anomalyclip_med._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "atomic": (
            "TEMP_TAG", "atomic_path", "fsync_file", "fsync_dir", "is_temporary", "new_temporary",
            "remove_stale_temporaries"
        ),
        "lock": ("LOCK_NAME", "FolderLock"),
        "distributed": ("DistributedContext",),
        "console": ("NOISY_LOGGERS", "NOISY_WARNINGS", "quiet_third_party"),
        "paths": ("check_writable_dir",),
        "hashing": ("HASH_TYPES", "file_digest"),
    },
)
