"""The allocd service: gRPC servicers, the engine, the stores and the edge."""

import os
from pathlib import Path

from core import use_build

# Snapshots are written by a forked child that never calls gRPC and leaves with
# os._exit. gRPC's own fork handlers, when on, reset its polling engine in that child and
# can abort it under load (a check in the epoll poller fails: 3 of 8 snapshots of a
# batch load run were lost that way). Off, the child is left alone. Read when gRPC is
# first imported, which every server entry point does after this package.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

#: Whether the service's compiled modules are used (scripts/compile_core.py builds the
#: allocation's wire encoder): as for the core's, only while built from the sources on disk.
COMPILED = use_build(__name__, Path(__file__).resolve().parent)
