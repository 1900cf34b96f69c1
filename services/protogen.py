"""Generate Python stubs from protos/*.proto into protos/ (run by `make setup`; never committed).

Files are compiled with the repository root on the include path, so `import "protos/common.proto";`
in a .proto becomes `from protos import common_pb2` in Python and the stubs import as `protos.*_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate() -> int:
    from grpc_tools import protoc  # only needed at set-up time

    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").glob("*.proto"))
    if not sources:
        return 0
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *sources,
    ]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(generate())
