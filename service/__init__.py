"""The allocd service: gRPC servicers, the engine, the stores and the edge."""

import os

# Snapshots are written by a forked child that never calls gRPC and leaves with
# os._exit. gRPC's own fork handlers, when on, reset its polling engine in that child and
# can abort it under load (a check in the epoll poller fails: 3 of 8 snapshots of a
# batch load run were lost that way). Off, the child is left alone. Read when gRPC is
# first imported, which every server entry point does after this package.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
