"""The one compiled part: the simulator's hot path (simulator/_fastcore.c, simulator.fast_engine). Optional:
without a C compiler the install goes on and every simulation runs in Python, with the same results."""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "simulator/_fastcore.c"
# The source's hash goes into the module, so simulator.fast_engine can refuse a build older than its source.
SOURCE_SHA = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "simulator._fastcore",
            [SOURCE],
            optional=True,
            define_macros=[("CORE_SOURCE_SHA", f'"{SOURCE_SHA}"')],
            # The same floating-point operations as the Python engine, in the same order: no contraction
            # into fused multiply-adds, no reassociation.
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"],
        )
    ]
)
