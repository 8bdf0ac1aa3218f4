"""The load harness: drives a running allocd over gRPC, side by side with a PostgreSQL
and a Redis implementation of the same reservations (`python -m bench.load --help`)."""
