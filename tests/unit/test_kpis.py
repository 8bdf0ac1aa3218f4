"""KPIs from the ledger's events, against values worked out by hand on scripted days."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.exceptions import Resolution
from core.kpis import BY_NAME, HOUR_MS, SLOTS, WINDOWS, Ring, Windowed, exception_ages
from core.ledger import Ledger, LedgerSettings
from core.model import EventKind
from core.network import SlaTier
from core.operations import execute
from core.orders import DAY_MS, OrderLineSpec, OrderSpec, PaymentStatus
from core.returns import Grade, Refund, RefundTiming, ReturnPolicy, refund_lines_of
from service import logcodec
from tests.unit.shop import shop
from tests.unit.test_orders_stateful import NOW


def world() -> tuple[Ledger, list]:
    ledger = Ledger(LedgerSettings(n_shards=2))
    events: list = []
    run(ledger, events, NOW - 2 * DAY_MS,
        *shop({("shirt", "n0"): 50, ("phone", "n1"): 10, ("socks", "n0"): 3}))
    return ledger, events


def run(ledger: Ledger, events: list, at: int, *commands: c.Command):
    outcome = None
    for command in commands:
        outcome = execute(ledger, command, at)
        events.extend(outcome.events)
    return outcome


def order(order_id: str, channel: str, *lines: tuple[str, int], **fields) -> OrderSpec:
    return OrderSpec(order_id, channel, SlaTier.STANDARD, tuple(
        OrderLineSpec(str(i + 1), sku, qty) for i, (sku, qty) in enumerate(lines)),
        postal_code="10001", **fields)


def ship_all(ledger: Ledger, events: list, order_id: str, at: int) -> None:
    for package_id in ledger.orders.orders[order_id].package_ids:
        state = ledger.orders.packages[package_id]
        run(ledger, events, at, c.ReleaseWave(ledger.catalog.nodes[state.plan.node].node_id))
        run(ledger, events, at, c.ConfirmPick(package_id, ()))
        scanned = tuple((ledger.catalog.sku_ids[line.sku], line.quantity)
                        for line in state.plan.lines)
        run(ledger, events, at, c.ConfirmPack(package_id, scanned), c.ConfirmShipment(
            package_id, f"T-{package_id}"))


def scripted_day() -> tuple[Ledger, list]:
    """Yesterday: o2 (a shirt from n0, a phone from n1: split). Today at 09:00: o1 (two
    shirts), o3 (five socks, three in stock: backorder), o4 (a shirt, payment held, then
    released). o1, o2 and o4 ship today, so o2's packages are a day late. A shirt of o1 is
    returned, received at once and inspected two hours later. Two cycle counts at n0: the
    shirts match, the socks are 1 short."""
    ledger, events = world()
    yesterday = NOW - DAY_MS
    run(ledger, events, yesterday,
        c.AllocateOrders((order("o2", "web", ("shirt", 1), ("phone", 1)),)))
    run(ledger, events, NOW, c.AllocateOrders((
        order("o1", "web", ("shirt", 2)), order("o3", "mkt", ("socks", 5)),
        order("o4", "web", ("shirt", 1), payment=PaymentStatus.ON_HOLD))))
    (hold,) = [e for e in ledger.exceptions.by_id.values() if e.order_id == "o4"]
    run(ledger, events, NOW, c.ResolveException(hold.exception_id, Resolution.RELEASE,
                                                 role="finance"))
    for order_id in ("o1", "o2", "o4"):
        ship_all(ledger, events, order_id, NOW)
    run(ledger, events, NOW, c.CreateReturn("r1", "o1", (("1", 1),)), c.ReceiveReturn("r1"))
    run(ledger, events, NOW + 2 * HOUR_MS, c.InspectReturn("r1", (("1", Grade.LIKE_NEW),)))
    run(ledger, events, NOW + 2 * HOUR_MS, c.SubmitCycleCount((
        c.CountLine("shirt", "n0", ledger.quantity(0, 0, 0)),
        c.CountLine("socks", "n0", 2))))
    return ledger, events


def kpi(ledger: Ledger, name: str, window: str, scope: str = "all", subject: str = "",
        at: int = NOW + 2 * HOUR_MS):
    return ledger.kpis.value(BY_NAME[name], window, scope, subject, at)


def test_order_kpis_match_the_hand_computed_values_per_window():
    ledger, _ = scripted_day()
    # week: o1..o4 decided; day and hour: o1, o3, o4 (o2 was decided yesterday)
    assert kpi(ledger, "split_shipment_rate", "week").value == pytest.approx(1 / 4)
    assert kpi(ledger, "split_shipment_rate", "day").value == 0
    assert kpi(ledger, "packages_per_order", "week").value == pytest.approx(5 / 4)
    assert kpi(ledger, "packages_per_order", "day").value == pytest.approx(3 / 3)
    assert kpi(ledger, "backorder_rate", "week").value == pytest.approx(1 / 4)
    assert kpi(ledger, "backorder_rate", "hour", at=NOW).value == pytest.approx(1 / 3)
    assert kpi(ledger, "backorder_rate", "hour").denominator == 0  # two hours later
    fill = kpi(ledger, "fill_rate", "week")
    assert (fill.numerator, fill.denominator) == (8, 10)  # 2+2+3+1 of 2+2+5+1
    assert kpi(ledger, "fill_rate", "day").value == pytest.approx(6 / 8)
    assert kpi(ledger, "fill_rate", "day", "channel", "mkt").value == pytest.approx(3 / 5)
    oversell = kpi(ledger, "oversell_rate", "week")
    assert (oversell.value, oversell.denominator) == (0, 8)
    decided = [ledger.orders.orders[o].last_decision for o in ("o1", "o2", "o3", "o4")]
    cost = kpi(ledger, "cost_per_order", "week")
    assert cost.value == pytest.approx(sum(d.cost_micros for d in decided) / 4 / 1e6)


def test_shipping_kpis_count_late_packages_by_node_and_touchless_orders():
    ledger, _ = scripted_day()
    sla = kpi(ledger, "sla_attainment", "day")
    assert (sla.numerator, sla.denominator) == (2, 4)  # o1, o4 on time; o2's two late
    assert kpi(ledger, "sla_attainment", "day", "node", "n0").value == pytest.approx(2 / 3)
    assert kpi(ledger, "sla_attainment", "day", "node", "n1").value == 0
    assert kpi(ledger, "late_shipments", "day", "node", "n1").value == 1
    assert kpi(ledger, "late_shipments", "day").value == 2
    touchless = kpi(ledger, "touchless_rate", "day")  # o4 was held: not touchless
    assert (touchless.numerator, touchless.denominator) == (2, 3)


def test_return_count_and_exception_kpis():
    ledger, _ = scripted_day()
    # shirts shipped: o1 2, o2 1, o4 1; one returned
    assert kpi(ledger, "return_rate", "day", "sku", "shirt").value == pytest.approx(1 / 4)
    # apparel: shirts and socks (none shipped)
    assert kpi(ledger, "return_rate", "day", "category", "apparel").value == pytest.approx(1 / 4)
    assert kpi(ledger, "return_rate", "day", "sku", "phone").value == 0
    assert kpi(ledger, "return_cycle_hours", "day").value == pytest.approx(2.0)
    leakage = kpi(ledger, "refund_leakage", "day")  # refunded on receipt: nothing at risk
    assert leakage.value == 0 and leakage.denominator > 0
    accuracy = kpi(ledger, "inventory_accuracy", "day", "node", "n0")
    assert (accuracy.numerator, accuracy.denominator) == (1, 2)
    # the hold, the backorder, and the socks' variance (all 3 allocated: nothing AVAILABLE
    # to write the missing one off from, so it is held for approval)
    assert kpi(ledger, "exceptions_raised", "day").value == 3
    for kind in ("payment_hold", "backorder", "count_variance"):
        assert kpi(ledger, "exceptions_raised", "day", "type", kind).value == 1
    queues = {q.kind: q for q in exception_ages(ledger, NOW + 2 * HOUR_MS)}
    assert set(queues) == {"backorder", "count_variance"}  # the hold was released
    assert (queues["backorder"].under_hour, queues["backorder"].under_day) == (0, 1)
    assert (queues["count_variance"].under_hour, queues["count_variance"].owner_role) == (
        1, "inventory_control")


def test_windows_slide_past_old_events():
    ledger, _ = scripted_day()
    later = NOW + 2 * DAY_MS
    assert kpi(ledger, "split_shipment_rate", "day", at=later).denominator == 0
    assert kpi(ledger, "split_shipment_rate", "week", at=later).denominator == 4
    assert kpi(ledger, "split_shipment_rate", "week", at=NOW + 8 * DAY_MS).denominator == 0


def trusted(ledger: Ledger, events: list) -> None:
    """Customer "loyal": three orders of a shirt, shipped, none returned (refunded when a
    return is authorised)."""
    for i in range(3):
        run(ledger, events, NOW, c.AllocateOrders((order(f"c{i}", "web", ("shirt", 1),
                                                         customer_id="loyal"),)))
        ship_all(ledger, events, f"c{i}", NOW)


def test_refunds_paid_before_the_units_return_are_leakage():
    ledger, events = world()
    trusted(ledger, events)
    run(ledger, events, NOW, c.CreateReturn("r9", "c0", (("1", 1),)))  # refunded at once
    leakage = kpi(ledger, "refund_leakage", "day", at=NOW)
    assert leakage.value == 1.0 and leakage.denominator > 0


def leakage_micros(ledger: Ledger) -> tuple[float, float]:
    """(refunded before the units came back, refunded) today."""
    leakage = kpi(ledger, "refund_leakage", "day", at=NOW)
    return leakage.numerator, leakage.denominator


def _partial_return() -> tuple[Ledger, list]:
    """o1: 3 shirts and a phone, shipped; all four authorised for return (refunded on
    receipt). Two shirts come back and are refunded, the phone still on its way; the
    third shirt never comes, and the inspection ends the receipt."""
    ledger, events = world()
    run(ledger, events, NOW, c.AllocateOrders((order("o1", "web", ("shirt", 3),
                                                     ("phone", 1)),)))
    ship_all(ledger, events, "o1", NOW)
    decision = run(ledger, events, NOW, c.CreateReturn("r1", "o1", (("1", 3), ("2", 1)))
                   ).detail
    assert decision.authorization.refund_timing == RefundTiming.ON_RECEIPT
    received = run(ledger, events, NOW, c.ReceiveReturn("r1", (("1", 2),))).detail
    assert received.refunded_micros == 2 * 20_000_000
    return ledger, events


def test_a_partial_return_refunded_for_what_came_back_leaks_nothing():
    """Counted whole before: the return as a whole had fewer units back than authorised."""
    ledger, events = _partial_return()
    assert leakage_micros(ledger) == (0, 40_000_000)
    run(ledger, events, NOW, c.InspectReturn("r1", (("1", Grade.LIKE_NEW),)))
    assert leakage_micros(ledger) == (0, 40_000_000)


def test_a_refund_on_authorisation_before_anything_came_back_is_all_leakage():
    ledger, events = world()
    trusted(ledger, events)
    run(ledger, events, NOW, c.AllocateOrders((order("o1", "web", ("phone", 1),
                                                     customer_id="loyal"),)))
    ship_all(ledger, events, "o1", NOW)
    decision = run(ledger, events, NOW, c.CreateReturn("r1", "o1", (("1", 1),))).detail
    assert decision.authorization.refund_timing == RefundTiming.ON_AUTHORIZATION
    assert decision.refunded_micros == 85_000_000  # the phone less its 15 % fee
    assert leakage_micros(ledger) == (85_000_000, 85_000_000)
    # Paid before it came: it stays leakage once the phone is back.
    run(ledger, events, NOW, c.ReceiveReturn("r1"))
    assert leakage_micros(ledger) == (85_000_000, 85_000_000)


def _refunded_across_a_receipt() -> tuple[Ledger, list]:
    """A trusted customer's shirt and phone on one return, refunded on authorisation
    (105,000,000: no fee on the shirt, 15 % on the phone) once finance approves. The shirt
    came back before the approval, the phone had not."""
    ledger, events = world()
    run(ledger, events, NOW, c.SetReturnPolicy(ReturnPolicy(refund_approval_micros=1),
                                               approved=True))
    trusted(ledger, events)
    run(ledger, events, NOW, c.AllocateOrders((order("o1", "web", ("shirt", 1), ("phone", 1),
                                                     customer_id="loyal"),)))
    ship_all(ledger, events, "o1", NOW)
    decision = run(ledger, events, NOW, c.CreateReturn("r1", "o1", (("1", 1), ("2", 1)))
                   ).detail
    assert decision.authorization.refund_timing == RefundTiming.ON_AUTHORIZATION
    assert decision.approval_id and not decision.refunded_micros
    run(ledger, events, NOW, c.ReceiveReturn("r1", (("1", 1),)))
    approved = run(ledger, events, NOW, c.DecideApproval(decision.approval_id, True,
                                                         "controller", "finance")).detail
    assert approved.refunded_micros == 105_000_000
    return ledger, events


def test_a_refund_for_a_line_back_and_a_line_on_its_way_leaks_only_the_second():
    ledger, _ = _refunded_across_a_receipt()
    # The phone's 100,000,000 less its own 15 % fee; the shirt (back, no fee) leaked nothing.
    assert leakage_micros(ledger) == (85_000_000, 105_000_000)


def test_leakage_replays_and_reads_back_from_a_snapshot_the_same():
    for scenario in (_partial_return, _refunded_across_a_receipt):
        ledger, events = scenario()
        replayed = Ledger(ledger.settings)
        replayed.apply(events, replay=True)
        restored = logcodec.loads(logcodec.dumps(ledger))
        for other in (replayed, restored):
            assert leakage_micros(other) == leakage_micros(ledger)
            assert other.kpis.report(NOW, names=("refund_leakage",), trend=True) == \
                ledger.kpis.report(NOW, names=("refund_leakage",), trend=True)


def test_an_older_log_s_refunds_without_their_lines_replay_to_the_same_leakage():
    """Refunds logged before they named their lines are read by the return's refund
    timing: on authorisation, for every unit authorised; on receipt, for units back."""
    for scenario in (_partial_return, _refunded_across_a_receipt):
        ledger, events = scenario()
        older = []
        for event in events:
            if event.kind != EventKind.REFUND_ISSUED:
                older.append(event)
                continue
            refund = event.payload
            assert refund.lines  # (what is written now)
            unpickled = Refund.__new__(Refund)  # as unpickled from a log of before
            unpickled.__setstate__([refund.rma_id, refund.gross_micros, refund.fee_micros,
                                    refund.net_micros])
            assert refund_lines_of(unpickled) == ()
            written_before = copy.copy(event)
            written_before.payload = unpickled
            older.append(written_before)
        replayed = Ledger(ledger.settings)
        replayed.apply(older, replay=True)
        assert leakage_micros(replayed) == leakage_micros(ledger)


def test_replaying_the_events_rebuilds_the_same_kpis():
    ledger, events = scripted_day()
    replayed = Ledger(ledger.settings)
    replayed.apply(events, replay=True)
    at = NOW + 2 * HOUR_MS
    assert replayed.kpis.report(at, trend=True) == ledger.kpis.report(at, trend=True)
    assert replayed.kpis.report(at, scopes=("sku",)) == ledger.kpis.report(at, scopes=("sku",))


class PerCommand(list):
    """What run() is given, a command's events to an entry (as the log holds them)."""

    def extend(self, events) -> None:
        self.append(list(events))


def kpi_state(ledger: Ledger, at: int) -> tuple:
    kpis = ledger.kpis
    skus = tuple(ledger.catalog.sku_ids)
    return (ledger.checksum(), ledger.ops.fingerprint(), kpis.newest_day, kpis.subjects_of,
            {key: [(r.index, r.value) for r in (w.hour, w.day, w.week)]
             for key, w in kpis.counters.items()},
            kpis.report(at, trend=True), kpis.report(at, scopes=("sku",), subjects=skus,
                                                     trend=True))


def test_forgotten_subjects_are_the_same_replayed_and_restored_from_a_snapshot():
    """Nine days after the scripted day a phone ships from n1 to a web order: the shirt,
    apparel, n0, mkt and the day's exception types are forgotten (the phone, n1 and web
    count afresh). Replayed command by command, or restored from a snapshot of before or
    after the forgetting with the rest replayed, the ledger holds and reads the same."""
    ledger, first = scripted_day()
    assert ("units_shipped", "sku", "shirt") in ledger.kpis.counters
    before = logcodec.dumps(ledger)
    later = NOW + 9 * DAY_MS
    middle = PerCommand()
    run(ledger, middle, later, c.AllocateOrders((order("o5", "web", ("phone", 1)),)))
    ship_all(ledger, middle, "o5", later)
    held: dict[str, set[str]] = {}
    for _, scope, subject in ledger.kpis.counters:
        held.setdefault(scope, set()).add(subject)
    assert held == {"all": {""}, "sku": {"phone"}, "category": {"electronics"},
                    "node": {"n1"}, "channel": {"web"}}
    assert ledger.kpis.subjects("units_shipped", "sku") == ["phone", "shirt"]
    after = logcodec.dumps(ledger)
    last = PerCommand()
    phone, n1 = ledger.catalog.sku_index["phone"], 1
    run(ledger, last, later + DAY_MS, c.SubmitCycleCount((
        c.CountLine("phone", "n1", ledger.quantity(phone, n1, 0)),)))

    replayed = Ledger(ledger.settings)
    for events in (first, *middle, *last):
        replayed.apply(events, replay=True)
    from_before = logcodec.loads(before)
    for events in (*middle, *last):
        from_before.apply(events, replay=True)
    from_after = logcodec.loads(after)
    for events in last:
        from_after.apply(events, replay=True)
    for at in (later + DAY_MS, later + 3 * DAY_MS):
        state = kpi_state(ledger, at)
        for other in (replayed, from_before, from_after):
            assert kpi_state(other, at) == state
    shirt = kpi(ledger, "return_rate", "week", "sku", "shirt", at=later + DAY_MS)
    assert (shirt.value, shirt.numerator, shirt.denominator) == (0.0, 0.0, 0.0)


def test_the_trend_shows_each_slot_oldest_first():
    ledger, _ = scripted_day()
    trend = ledger.kpis.value(BY_NAME["exceptions_raised"], "day", "all", "", NOW,
                              trend=True).trend
    assert len(trend) == SLOTS and trend[-1] == 2 and sum(trend) == 2


# ---- the ring against a list of every observation -------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(WINDOWS)),
       st.lists(st.tuples(st.integers(0, 3 * 7 * DAY_MS), st.integers(1, 5)), max_size=40),
       st.integers(0, 4 * 7 * DAY_MS))
def test_a_ring_sums_what_a_list_of_observations_would(window, observations, now):
    """Reference: keep every observation; the window at `now` holds those whose slot is
    one of the 60 ending with now's slot, unless a newer observation 60 or more slots
    later pushed them out of the ring (an observation arriving after its slot was
    reused is dropped)."""
    ring = Ring(WINDOWS[window])
    slot = WINDOWS[window] // SLOTS
    newest_at: dict[int, int] = {}  # ring position -> newest slot seen there
    kept = []
    for t, amount in observations:
        ring.add(t, amount)
        position, number = (t // slot) % SLOTS, t // slot
        if number >= newest_at.get(position, -1):
            if number > newest_at.get(position, -1):
                kept = [(s, a) for s, a in kept if s % SLOTS != position]
                newest_at[position] = number
            kept.append((number, amount))
    now_slot = now // slot
    expected = sum(a for s, a in kept if now_slot - SLOTS < s <= now_slot)
    assert ring.total(now) == expected
    assert sum(ring.series(now)) == expected


def _counter_with_history() -> Windowed:
    counter = Windowed()
    for k in range(200):
        counter.add(k * 7 * 60_000, float(k % 5))
    return counter


def test_a_counter_reads_back_from_the_store_as_it_was_written():
    """Snapshots hold counters as their fields (__reduce__): the same slots, and the three
    windows still the ones `rings` names."""
    counter = _counter_with_history()
    back = logcodec.loads(logcodec.dumps(counter))
    for window in WINDOWS:
        assert back.rings[window].index == counter.rings[window].index
        assert back.rings[window].value == counter.rings[window].value
        assert back.rings[window].slot_ms == counter.rings[window].slot_ms
    assert back.rings["hour"] is back.hour and back.rings["week"] is back.week
    now = 199 * 7 * 60_000
    assert back.day.total(now) == counter.day.total(now) > 0


def test_counters_in_the_form_older_snapshots_hold_still_read():
    """Before, counters and rings were pickled in the default form of a class with slots:
    made empty, then (None, {field: value}) set."""
    counter = _counter_with_history()
    rings = {}
    for window, ring in counter.rings.items():
        old = Ring.__new__(Ring)
        old.__setstate__((None, {"index": list(ring.index), "slot_ms": ring.slot_ms,
                                 "value": list(ring.value)}))
        rings[window] = old
    back = Windowed.__new__(Windowed)
    back.__setstate__((None, {"day": rings["day"], "hour": rings["hour"], "rings": rings,
                              "week": rings["week"]}))
    now = 199 * 7 * 60_000
    for window in WINDOWS:
        assert back.rings[window].series(now) == counter.rings[window].series(now)
    back.add(now + 60_000, 2.0)
    assert back.hour.total(now + 60_000) == counter.hour.total(now + 60_000) + 2.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 7 * DAY_MS), st.integers(1, 5)), max_size=40))
def test_a_counter_s_newest_slot_is_its_week_ring_s_newest_however_it_was_kept(observations):
    """What forgetting reads of a counter (its newest week slot, kept as it is counted)
    is the newest slot the week ring holds: counted, read back from a snapshot, or from
    the form older snapshots hold."""
    counter = Windowed()
    for t, amount in observations:
        counter.add(t, float(amount))
        assert counter.newest == max(counter.week.index)
    back = logcodec.loads(logcodec.dumps(counter))
    old = Windowed.__new__(Windowed)
    old.__setstate__((None, {"day": counter.day, "hour": counter.hour,
                             "rings": counter.rings, "week": counter.week}))
    assert back.newest == old.newest == counter.newest == max(counter.week.index)
