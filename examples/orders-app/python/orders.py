"""The order saga's inventory, validation and notification steps.

Plain Lambda handlers with no Baton library. Each receives Baton's step
event, {"input": {...}, "baton": {...}}, returns the step's output, and
raises to fail the attempt. The exception's class name is the error type the
workflow's retry_on / no_retry_on match; a class name starting with
"Permanent" tells Baton never to retry.

Ids derive from baton.idempotency_key, which is the same on every retry and
redelivery of a step, so a retry returns the id the first attempt returned.

input.fail makes a step fail on purpose, keyed by function name:
{"reserve-inventory": "always"} (retryable), {"...": "permanent"}, or
{"...": {"first": N}} (fails attempts 1..N, then succeeds).
"""

import hashlib


class InjectedFailure(Exception):
    """A retryable failure asked for by input.fail."""


class PermanentInjectedFailure(Exception):
    """A failure asked for by input.fail that no retry can fix."""


class PermanentInvalidInput(Exception):
    """The input cannot be processed, however often it is retried."""


def validate_order(event, context):
    """validate-order: {valid, orderId, items, total} (plus reason when not valid)."""
    order = _begin(event, "validate-order")
    order_id = order.get("orderId") or ""
    if not isinstance(order_id, str):
        raise PermanentInvalidInput("orderId must be a string")
    items = order.get("items") or [{"sku": "SKU-1", "qty": 1, "price": 25}]
    if not isinstance(items, list):
        raise PermanentInvalidInput("items must be an array")
    total = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("sku"):
            raise PermanentInvalidInput(f"items[{i}] needs a sku")
        qty, price = item.get("qty", 1), item.get("price", 0)
        if not _is_number(qty) or not _is_number(price) or qty <= 0 or price < 0:
            raise PermanentInvalidInput(f"items[{i}] needs a positive qty and a price")
        total += qty * price
    output = {"valid": True, "orderId": order_id, "items": items, "total": total}
    if not order_id.strip():
        output.update(valid=False, reason="orderId is empty")
    elif order_id.startswith("bad"):
        output.update(valid=False, reason='orderId starts with "bad"')
    return output


def reserve_inventory(event, context):
    """reserve-inventory: {reservationId}."""
    _begin(event, "reserve-inventory")
    return {"reservationId": "res-" + _id_from(event)}


def release_inventory(event, context):
    """release-inventory (undoes reserve-inventory): {reservationId, released}."""
    order = _begin(event, "release-inventory")
    if order.get("outcome_unknown"):
        # The reservation's outcome is unknown (its attempt timed out): undo
        # the id it would have made from its key; releasing nothing is harmless.
        reservation = "res-" + _hash(order.get("step_idempotency_key") or "")
    else:
        reservation = _required(order, "reservationId")
    return {"reservationId": reservation, "released": True}


def notify_customer(event, context):
    """notify-customer: {notified, messageId}."""
    order = _begin(event, "notify-customer")
    _required(order, "orderId")
    return {"notified": True, "messageId": "msg-" + _id_from(event)}


def _begin(event, function):
    """The step's input, after applying its failure switch."""
    order = event.get("input") or {}
    if not isinstance(order, dict):
        raise PermanentInvalidInput("the input must be an object")
    attempt = event.get("baton", {}).get("attempt", 1)
    switch = (order.get("fail") or {}).get(function)
    if switch == "always":
        raise InjectedFailure(f"{function} fails on every attempt (input.fail)")
    if switch == "permanent":
        raise PermanentInjectedFailure(f"{function} fails for good (input.fail)")
    if isinstance(switch, dict) and attempt <= switch.get("first", 0):
        raise InjectedFailure(f"{function} fails attempt {attempt} (input.fail)")
    return order


def _id_from(event):
    """12 hex digits of the step's idempotency key: the same on every retry."""
    return _hash(event.get("baton", {}).get("idempotency_key") or "")


def _hash(key):
    if not key:
        raise PermanentInvalidInput("no idempotency key to derive the id from")
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _required(order, field):
    value = order.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PermanentInvalidInput(f"{field} is missing")
    return value


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
