// The order saga's payment steps: plain Lambda handlers, no Baton library.
//
// Each receives Baton's step event, {input: {...}, baton: {...}}, returns the
// step's output, and throws to fail the attempt. The error's `name` is the
// error type the workflow's retry_on / no_retry_on match; a name starting
// with "Permanent" tells Baton never to retry.
//
// The charge id derives from baton.idempotency_key, which is the same on
// every retry and redelivery of the step: pass it to the payment provider
// as its idempotency key, and a retry can never charge twice.
//
// input.fail makes a step fail on purpose, keyed by function name:
// {"process-payment": "always"} (retryable), {"process-payment": "permanent"},
// or {"process-payment": {"first": N}} (fails attempts 1..N, then succeeds).

import { createHash } from "node:crypto";

class InjectedFailure extends Error {
  name = "InjectedFailure";
}

class PermanentInjectedFailure extends Error {
  name = "PermanentInjectedFailure";
}

class PermanentInvalidInput extends Error {
  name = "PermanentInvalidInput";
}

// process-payment: {chargeId, amount}.
export const processPayment = async (event) => {
  const input = begin(event, "process-payment");
  const amount = input.amount;
  if (typeof amount !== "number" || !Number.isFinite(amount) || amount < 0) {
    throw new PermanentInvalidInput(`amount must be a non-negative number, got ${JSON.stringify(amount)}`);
  }
  return { chargeId: `ch-${idFrom(event)}`, amount };
};

// refund-payment (undoes process-payment): {refundId, chargeId}.
export const refundPayment = async (event) => {
  const input = begin(event, "refund-payment");
  // The charge's outcome is unknown (its attempt timed out): refund the id it
  // would have made from its key; refunding a charge that never was is a no-op.
  const chargeId = input.outcome_unknown
    ? `ch-${hash(input.step_idempotency_key)}`
    : input.chargeId;
  if (typeof chargeId !== "string" || chargeId.trim() === "") {
    throw new PermanentInvalidInput("chargeId is missing");
  }
  return { refundId: `ref-${idFrom(event)}`, chargeId };
};

// The step's input, after applying its failure switch.
function begin(event, functionName) {
  const input = event?.input ?? {};
  if (typeof input !== "object" || Array.isArray(input)) {
    throw new PermanentInvalidInput("the input must be an object");
  }
  const attempt = event?.baton?.attempt ?? 1;
  const sw = input.fail?.[functionName];
  if (sw === "always") {
    throw new InjectedFailure(`${functionName} fails on every attempt (input.fail)`);
  }
  if (sw === "permanent") {
    throw new PermanentInjectedFailure(`${functionName} fails for good (input.fail)`);
  }
  if (typeof sw === "object" && sw !== null && attempt <= (sw.first ?? 0)) {
    throw new InjectedFailure(`${functionName} fails attempt ${attempt} (input.fail)`);
  }
  return input;
}

// 12 hex digits of the step's idempotency key: the same on every retry.
function idFrom(event) {
  return hash(event?.baton?.idempotency_key);
}

function hash(key) {
  if (!key) {
    throw new PermanentInvalidInput("no idempotency key to derive the id from");
  }
  return createHash("sha256").update(key).digest("hex").slice(0, 12);
}
