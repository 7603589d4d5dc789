"""Builds the C core; everything else is in pyproject.toml."""

import os

import numpy as np
from setuptools import Extension, setup

extra = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
extra += os.environ.get("SHMRING_CFLAGS", "").split()

setup(
    ext_modules=[
        Extension(
            "shmring._core",
            ["shmring/_core.c", "shmring/_mpmc.c", "shmring/_array.c", "shmring/_semaphore.c", "shmring/_queue.c"],
            depends=[
                "shmring/_atomic.h",
                "shmring/_core.h",
                "shmring/_spsc.h",
                "shmring/_mpmc.h",
                "shmring/_queue.h",
                "shmring/_ring.h",
            ],
            include_dirs=[np.get_include()],
            extra_compile_args=extra,
            extra_link_args=os.environ.get("SHMRING_LDFLAGS", "").split(),
        )
    ]
)
