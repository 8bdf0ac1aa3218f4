"""The operations dashboard: a page and the JSON it refreshes from, served on the
metrics HTTP port beside `/metrics`.

The page (service/dashboards/operations.html) is plain HTML and JavaScript with its
charts drawn as inline SVG: nothing to build and nothing fetched from elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.alerts import AlertRecord
from core.kpis import BY_NAME, exception_ages
from core.ledger import Ledger
from core.orders import DAY_MS

PAGE = Path(__file__).resolve().parent / "dashboards" / "operations.html"
JSON_PATH = "/dashboard/operations.json"
#: The KPIs on the page's cards, in order.
CARDS = ("oversell_rate", "fill_rate", "sla_attainment", "split_shipment_rate",
         "packages_per_order", "backorder_rate", "touchless_rate", "cost_per_order",
         "inventory_accuracy", "return_rate", "return_cycle_hours", "refund_leakage",
         "exceptions_raised", "late_shipments", "short_picks")
MAX_ROWS = 200

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def overview(ledger: Ledger, now_ms: int) -> dict[str, Any]:
    """Everything the page shows, as of `now_ms`."""
    kpis = ledger.kpis
    cards = []
    for name in CARDS:
        definition = BY_NAME[name]
        day = kpis.value(definition, "day", "all", "", now_ms)
        hour = kpis.value(definition, "hour", "all", "", now_ms, trend=True)
        week = kpis.value(definition, "week", "all", "", now_ms)
        cards.append({"name": name, "unit": definition.unit,
                      "description": definition.description,
                      "hour": hour.value, "day": day.value, "week": week.value,
                      "denominator_day": day.denominator, "trend": list(hour.trend)})
    ops = ledger.ops
    cat = ledger.catalog
    # Open alerts first, then the latest acknowledged, newest first: read from the open
    # ones the books keep and from the end of the history, not by sorting every alert.
    alerts = sorted(ops.open_alert_records(), key=lambda r: -r.created_ms)[:MAX_ROWS]
    acknowledged: list[AlertRecord] = []
    for record in reversed(ops.alerts.values()):
        if len(alerts) + len(acknowledged) >= MAX_ROWS:
            break
        if record.ack is not None:
            acknowledged.append(record)
    alerts += sorted(acknowledged, key=lambda r: -r.created_ms)
    nodes = []
    for n, spec in enumerate(cat.nodes):
        sla = kpis.value(BY_NAME["sla_attainment"], "day", "node", spec.node_id, now_ms)
        late = kpis.total("packages_late", "node", spec.node_id, "day", now_ms)
        nodes.append({"node_id": spec.node_id, "name": spec.name,
                      "type": spec.node_type.name.lower(), "enabled": spec.enabled,
                      "routing_penalty_micros": ops.node_penalty.get(n, 0),
                      "shipped_day": sla.denominator, "late_day": late,
                      "sla_attainment_day": sla.value})
    return {
        "as_of_ms": now_ms,
        "rules_version": ops.rules.version,
        "kpis": cards,
        "alerts": [{
            "alert_id": r.info.alert_id, "rule_id": r.info.rule_id,
            "subject": r.info.subject, "detail": r.info.detail,
            "status": r.status.name.lower(), "age_s": (now_ms - r.created_ms) // 1000,
            "tasks": r.task_ids, "actions": r.action_ids, "approvals": r.approval_ids,
        } for r in alerts[:MAX_ROWS]],
        "tasks": [{
            "task_id": r.info.task_id, "type": r.info.task_type.name.lower(),
            "subject": r.info.subject, "owner_role": r.owner_role,
            "age_s": (now_ms - r.created_ms) // 1000,
        } for r in ops.open_task_records()[:MAX_ROWS]],
        "actions": [{
            "action_id": r.info.action_id, "type": r.info.spec.action_type.name.lower(),
            "subject": r.info.spec.subject, "applied_by": r.info.actor,
            "reason": r.info.spec.reason,
        } for r in ops.active_action_records()[:MAX_ROWS]],
        "approvals": [{
            "approval_id": r.request.approval_id, "action": r.request.action,
            "detail": r.request.detail, "age_s": (now_ms - r.created_ms) // 1000,
        } for r in ledger.approvals.pending()][:MAX_ROWS],
        "exception_queues": [{
            "type": q.kind, "owner_role": q.owner_role, "under_hour": q.under_hour,
            "under_day": q.under_day, "older": q.older,
            "oldest_h": round(q.oldest_ms / 3_600_000, 1),
        } for q in exception_ages(ledger, now_ms)],
        "nodes": nodes,
        "day_ms": DAY_MS,
    }


def dashboard_app(metrics_app: WsgiApp, snapshot: Callable[[], dict[str, Any]]) -> WsgiApp:
    """`/` and `/dashboard`: the page; JSON_PATH: `snapshot()`; anything else: metrics."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/", "/dashboard", "/dashboard/"):
            body = PAGE.read_bytes()
            kind = "text/html; charset=utf-8"
        elif path == JSON_PATH:
            body = json.dumps(snapshot(), allow_nan=False).encode()
            kind = "application/json"
        else:
            return metrics_app(environ, start_response)
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]

    return app
