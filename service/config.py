"""Settings: one typed object, from defaults < TOML file < ALLOCD_* environment < flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    partition: str = "default"
    shards: int = 16
    # Load the demo catalogue and stock at start when the ledger is empty.
    demo: bool = False
    demo_skus: int = 5000
    demo_seed: int = 7
    # A network cost model (.toml or .json, the proto Network in its JSON mapping) to
    # apply at start. With --demo, the demo network is applied if the ledger has none.
    network_file: str = ""
    # Durability: "file" (the embedded store under data_dir), "memory" (nothing survives
    # a restart), or a redis:// URL.
    store: str = "file"
    data_dir: str = "data"
    # The Redis store (the production store), when set: overrides `store`.
    redis_url: str = ""
    # sync: fsync before answering; group: also wait group_commit_window_ms to batch;
    # async-may-lose-1s: answer before fsync (an OS crash can lose the last second).
    durability: str = "sync"
    group_commit_window_ms: float = 2.0
    group_commit_max: int = 1000  # commits in one write at most
    checkpoint_every_events: int = 1_000_000
    checkpoint_every_s: float = 300.0
    # After a snapshot, the next waits at least this many times as long as that one took
    # to write: a snapshot's cost grows with the state, so at a steady rate of events a
    # fixed count between snapshots ends in one snapshot after another (a core busy
    # writing them); this way they take at most 1/(1 + N) of the time. Unless the log has
    # grown by checkpoint_max_events since the last one: that bounds a restart's replay.
    checkpoint_rest_factor: float = 4.0
    checkpoint_max_events: int = 10_000_000
    # How much the process writing a snapshot yields to the server (its niceness, 0-19).
    snapshot_nice: int = 10
    # Recent events kept in memory for WatchInventoryEvents.
    watch_buffer_events: int = 200_000
    # Authentication: "off" (who acts comes from x-allocd-actor/x-allocd-role metadata; for
    # development) or "token" (HMAC-signed bearer tokens; see `allocd token issue`).
    auth: str = "off"
    # The token signing secret, or a file holding it (never logged).
    auth_secret: str = ""
    auth_secret_file: str = ""
    # TLS: the server's certificate and key (PEM files); with a client CA, callers must
    # present a certificate it signed (mutual TLS). Without TLS the server listens only on
    # loopback unless allow_plaintext is set.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    allow_plaintext: bool = False
    # Prometheus metrics over HTTP on this port (0: off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    # Limits.
    # Calls per second per principal (per peer without authentication); 0 is off.
    rate_limit_per_s: float = 0.0
    rate_limit_burst: float = 100.0
    max_streams_per_connection: int = 1000
    max_lines_per_request: int = 10_000
    # Re-optimisation: processes that solve its sub-problems (1: in the server's own).
    reopt_workers: int = 2
    max_message_bytes: int = 16 * 1024 * 1024
    # Reservations.
    default_reservation_ttl_s: int = 900
    max_reservation_ttl_s: int = 30 * 24 * 3600
    sweep_interval_s: float = 1.0
    # The audit log's lines are put on the disk (fdatasync) this often: at most this long
    # of the record of calls is lost to a power cut (the calls' changes are not). 0: only
    # as the server stops.
    audit_sync_interval_s: float = 0.2
    # Orders: at most this many per AllocateOrders call; fraud scores above the threshold
    # are held for review.
    max_orders_per_request: int = 1000
    fraud_threshold: float = 0.8
    # A closed order (shipped, or cancelled whole) leaves memory this many days after it
    # closed, and never before the return policy's longest window is over: its record is
    # archived (event ORDER_ARCHIVED, on the event stream), its id stays taken. Checked
    # every archive_interval_s; 0 there: orders are kept for ever.
    order_retention_days: float = 90.0
    archive_interval_s: float = 3600.0
    # Journal entries posted more than this many days ago are closed into the store
    # (event JOURNAL_CLOSED): they leave memory and snapshots, and GetJournal and
    # VerifyJournal read them from the store. Checked every journal_close_interval_s; 0
    # there: every entry is kept in memory for ever.
    journal_retention_days: float = 62.0
    journal_close_interval_s: float = 3600.0
    # Under load, single-order allocations (AllocateOrder, AllocateStream) wait up to this
    # long for others to be decided and committed with; an idle server never waits.
    # 0: each is decided alone.
    join_window_ms: float = 2.0
    # The same for AllocateStream messages, joined apart from unary calls. A stream's
    # caller keeps its own window of messages in flight and sends more only as answers
    # come back: waiting long for company leaves the server idle while that caller waits
    # for it (a 4 ms wait cost a third of the streamed rate, 1 ms kept it).
    stream_join_window_ms: float = 1.0
    # Calls waiting for company run once none has joined them for this long (the burst
    # of arrivals is over), or twice what the last joined command took to run if that is
    # longer, or when their window is up, whichever comes first.
    join_quiet_ms: float = 0.3
    # Inventory values (opportunity costs from LP duals over forecast demand): the default
    # policy until one is set through NetworkService.SetInventoryValuePolicy. Off: myopic.
    inventory_values: bool = False
    inventory_value_refresh_s: float = 300.0
    inventory_value_horizon_days: float = 7.0
    inventory_value_scale: float = 1.0
    inventory_value_shortage_weight: float = 0.5
    inventory_value_tail_from_draws: bool = False
    # A cycle-count variance above this many units is quarantined for approval.
    count_hold_units: int = 5
    count_hold_percent: float = 0.0  # also hold above this % of the expected quantity
    # Write-offs worth more than this (micros) wait for an approver.
    write_off_approval_micros: int = 1_000_000_000
    # Idempotency records kept (oldest forgotten first).
    idempotency_capacity: int = 200_000
    # Seconds in-flight calls get to finish on SIGTERM.
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object a line, with request ids

    def with_overrides(self, values: dict[str, Any]) -> Settings:
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown setting {key!r}")
            clean[name] = _coerce(raw, type(getattr(self, name)), name)
        return replace(self, **clean)


def _coerce(raw: Any, kind: type, name: str) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if isinstance(raw, str):
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(f"setting {name}: {raw!r} is not a boolean")
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"setting {name}: {raw!r} is not a {kind.__name__}") from None
    if kind is float and isinstance(raw, int):
        return float(raw)
    raise ValueError(f"setting {name}: {raw!r} is not a {kind.__name__}")


ENV_PREFIX = "ALLOCD_"


def load_settings(config_file: str | None = None, flags: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    settings = Settings()
    environ = dict(os.environ) if environ is None else environ
    config_file = config_file or environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file:
        with Path(config_file).open("rb") as fh:
            data = tomllib.load(fh)
        settings = settings.with_overrides(data.get("allocd", data))
    names = {f.name for f in fields(Settings)}
    env_values = {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() in names
    }
    settings = settings.with_overrides(env_values)
    if flags:
        settings = settings.with_overrides({k: v for k, v in flags.items() if v is not None})
    return settings
