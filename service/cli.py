"""The `allocd` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import fields
from pathlib import Path

from service import reopt_cli
from service.config import ENV_PREFIX, Settings, load_settings
from service.healthcheck import add_tls_arguments, client_channel


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"(env {ENV_PREFIX}{f.name.upper()}, default {default!r})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="allocd",
        description="allocd: inventory ledger, available-to-promise and order allocation "
                    "over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run the gRPC server",
        description="Run the gRPC server. Settings come from defaults, then the TOML file "
                    f"(--config or {ENV_PREFIX}CONFIG, keys at the top level or under [allocd]), "
                    f"then {ENV_PREFIX}* environment variables, then these flags.")
    serve.add_argument("--config", default=None, help="TOML settings file")
    _add_setting_flags(serve)
    verify = sub.add_parser(
        "verify", help="rebuild the state from a file store and check its invariants",
        description="Read the newest snapshot and the log after it (changing nothing), "
                    "replay, check that no bucket is negative and units are conserved, and "
                    "print a checksum of the state. Exit 1 if a check fails.")
    verify.add_argument("--data-dir", default="data")
    verify.add_argument("--partition", default="default")
    verify.add_argument("--redis-url", default="", help="verify the Redis store at this URL")
    verify.add_argument("--config", default=None,
                        help="the server's TOML settings file (its shard count is read from "
                             f"it, from {ENV_PREFIX}SHARDS or from --shards)")
    verify.add_argument("--shards", type=int, default=None,
                        help="the server's shard count, if not the default")
    token = sub.add_parser("token", help="issue or revoke bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    issue = token_sub.add_parser(
        "issue", help="print a signed token (the secret comes from --secret-file, "
                      f"{ENV_PREFIX}AUTH_SECRET or {ENV_PREFIX}AUTH_SECRET_FILE)")
    issue.add_argument("--principal", required=True)
    issue.add_argument("--roles", required=True, help="comma-separated, e.g. oms,finance")
    issue.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    issue.add_argument("--secret-file", default=None)
    revoke = token_sub.add_parser("revoke", help="revoke a token id on a running server")
    revoke.add_argument("--token-id", required=True, help="the token's jti")
    revoke.add_argument("--address", default="127.0.0.1:50051")
    revoke.add_argument("--admin-token", default=None,
                        help=f"an admin bearer token (or {ENV_PREFIX}TOKEN)")
    add_tls_arguments(revoke)
    health = sub.add_parser("health", help="exit 0 if the server at --address is SERVING")
    health.add_argument("--address", default="127.0.0.1:50051")
    health.add_argument("--service", default="", help="a service name; empty for the server")
    health.add_argument("--timeout", type=float, default=3.0)
    add_tls_arguments(health)
    reopt_cli.add_parser(sub, ENV_PREFIX)
    bench = sub.add_parser(
        "bench", help="load-test a server, side by side with PostgreSQL and Redis peers "
                      "(`allocd bench compare`, `allocd bench run`; see `allocd bench -- -h`)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="the arguments of python -m bench.load")
    return parser


def _token(args: argparse.Namespace) -> int:
    import os
    import time

    if args.token_command == "issue":
        from service.auth import issue_token
        from service.server import auth_secret

        flags = {"auth_secret_file": args.secret_file} if args.secret_file else {}
        try:
            secret = auth_secret(load_settings(None, flags))
            token, token_id = issue_token(secret, args.principal,
                                          [r for r in args.roles.split(",") if r], args.ttl,
                                          int(time.time()))
        except (ValueError, OSError) as error:
            print(f"allocd: {error}", file=sys.stderr)
            return 2
        print(token)
        print(f"token id (jti): {token_id}", file=sys.stderr)
        return 0
    import grpc
    from allocd.v1 import access_service_pb2, access_service_pb2_grpc

    admin = args.admin_token or os.environ.get(f"{ENV_PREFIX}TOKEN", "")
    try:
        channel = client_channel(args.address, args.ca_file, args.cert_file, args.key_file,
                                 args.allow_plaintext, carries_token=True)
    except (ValueError, OSError) as error:
        print(f"allocd: {error}", file=sys.stderr)
        return 2
    with channel:
        stub = access_service_pb2_grpc.AccessServiceStub(channel)
        try:
            stub.RevokeToken(access_service_pb2.RevokeTokenRequest(
                request_id=f"revoke-{args.token_id}", token_id=args.token_id),
                metadata=(("authorization", f"Bearer {admin}"),), timeout=10)
        except grpc.RpcError as error:
            print(f"allocd: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"revoked {args.token_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        import importlib

        # Imported by name: the harness lives in bench/, outside the typed service code.
        harness = importlib.import_module("bench.load.__main__")
        bench_args = args.bench_args[args.bench_args[:1] == ["--"]:]
        return int(harness.main(bench_args))
    if args.command == "token":
        return _token(args)
    if args.command == "reopt":
        return reopt_cli.run(args)
    if args.command == "verify":
        from service.verify import verify

        try:
            settings = load_settings(args.config, {"shards": args.shards,
                                                   "partition": args.partition})
        except (ValueError, OSError) as error:
            print(f"allocd: {error}", file=sys.stderr)
            return 2
        return verify(Path(args.data_dir) / args.partition, args.redis_url, args.partition,
                      settings)
    if args.command == "health":
        from service.healthcheck import check

        serving = check(args.address, args.service, args.timeout, args.ca_file,
                        args.cert_file, args.key_file)
        print("SERVING" if serving else "NOT_SERVING")
        return 0 if serving else 1
    if args.command == "serve":
        flags = {f.name: getattr(args, f.name) for f in fields(Settings)}
        try:
            settings = load_settings(args.config, flags)
        except (ValueError, OSError) as error:
            print(f"allocd: {error}", file=sys.stderr)
            return 2
        from service.logs import configure

        configure(settings.log_level, settings.log_format)
        from service.server import serve
        from service.store import StoreCorrupt, StoreUnavailable

        try:
            asyncio.run(serve(settings))
        except (OSError, StoreUnavailable, StoreCorrupt) as error:
            print(f"allocd: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
