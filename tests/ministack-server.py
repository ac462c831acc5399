"""MiniStack on loopback for the tests that run real Lambda function code.

Usage: ministack-server.py PORT [PARENT_PID]

MiniStack runs `python3.x` and `nodejs` handlers as local processes and
honours an event-invoke config's MaximumRetryAttempts and OnFailure
destination for asynchronous invokes. This harness fills two gaps, and
nothing else is changed:

- MiniStack never delivers the OnSuccess destination. After a successful
  asynchronous invocation the harness sends the invocation record AWS
  documents (condition `Success`, the event as `requestPayload`, the return
  value as `responsePayload`) to the function's OnSuccess SQS queue.
- MiniStack reports every error a Python or Node handler throws as
  `Runtime.HandlerError`; AWS reports the exception's own type (the class
  name in Python, `error.name` in Node). The harness reads it back from the
  traceback MiniStack's worker already returns. With PARENT_PID, the server exits when that
process does, so a test process that started it leaves nothing behind.
"""

import hashlib
import json
import os
import sys
import threading
import time

port = sys.argv[1]
os.environ["GATEWAY_PORT"] = port
os.environ.setdefault("BIND_HOST", "127.0.0.1")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import ministack.app  # noqa: E402
import ministack.core.lambda_runtime as lambda_runtime  # noqa: E402
import ministack.services.lambda_svc as lambda_svc  # noqa: E402


def _send_to_queue(target_arn, body):
    import ministack.services.sqs as sqs

    queue = sqs._queue_by_arn(target_arn)
    if queue is None:
        print(f"OnSuccess destination {target_arn} not found", file=sys.stderr)
        return
    now = time.time()
    queue["messages"].append({
        "id": lambda_svc.new_uuid(),
        "body": body,
        "md5_body": hashlib.md5(body.encode()).hexdigest(),
        "md5_attrs": "",
        "receipt_handle": None,
        "sent_at": now,
        "visible_at": now + sqs.queue_delay(queue),
        "receive_count": 0,
        "first_receive_at": None,
        "message_attributes": {},
        "sys": {"SenderId": lambda_svc.get_account_id(), "SentTimestamp": str(int(now * 1000))},
        "group_id": None, "dedup_id": None, "dedup_cache_key": None, "seq": None,
    })
    lambda_svc.esm_wake.set()


def _event_invoke_config(func):
    return (
        func.get("event_invoke_config")
        or (func.get("event_invoke_configs") or {}).get("$LATEST")
        or {}
    )


_error_types = threading.local()
_worker_invoke = lambda_runtime.Worker.invoke


def _error_type_of(trace):
    """The exception's type as AWS names it, from a Python traceback (last
    line `module.Class: message`) or a Node stack (first line `Name: message`)."""
    lines = [line for line in (trace or "").strip().splitlines() if line.strip()]
    if not lines:
        return None
    python = lines[0].startswith("Traceback")
    head = (lines[-1] if python else lines[0]).split(":", 1)[0].strip()
    name = head.rsplit(".", 1)[-1] if python else head
    return name if name.replace("_", "").replace(".", "").isalnum() else None


def _invoke_keeping_error_type(self, *args, **kwargs):
    result = _worker_invoke(self, *args, **kwargs)
    _error_types.value = (
        _error_type_of(result.get("trace")) if result.get("status") == "error" else None
    )
    return result


lambda_runtime.Worker.invoke = _invoke_keeping_error_type
_execute_function = lambda_svc._execute_function


def _execute_keeping_error_type(func, event):
    _error_types.value = None
    result = _execute_function(func, event)
    body = result.get("body")
    error_type = getattr(_error_types, "value", None)
    if result.get("error") and isinstance(body, dict) and error_type \
            and body.get("errorType") == "Runtime.HandlerError":
        body["errorType"] = error_type
    return result


lambda_svc._execute_function = _execute_keeping_error_type
_original = lambda_svc.invoke_async_with_retry


def invoke_async_with_retry(func, event):
    eic = _event_invoke_config(func)
    on_success = ((eic.get("DestinationConfig") or {}).get("OnSuccess") or {}).get("Destination")
    if not on_success:
        return _original(func, event)
    # MiniStack's own loop, run here so the successful result can be seen.
    config = func.get("config") or func
    account_id, region = lambda_svc._account_region_from_function_config(config)

    def run():
        lambda_svc._request_account_id.set(account_id)
        lambda_svc._request_region.set(region)
        attempts = int(eic.get("MaximumRetryAttempts", 2)) + 1
        result = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(1)
            result = lambda_svc._execute_function(func, event)
            if not result.get("error"):
                record = {
                    "version": "1.0",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                    "requestContext": {
                        "requestId": lambda_svc.new_uuid(),
                        "functionArn": config.get("FunctionArn", ""),
                        "condition": "Success",
                        "approximateInvokeCount": attempt + 1,
                    },
                    "requestPayload": event,
                    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
                    "responsePayload": result.get("body"),
                }
                _send_to_queue(on_success, json.dumps(record))
                return
        on_failure = ((eic.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if on_failure and result is not None:
            lambda_svc._route_async_failure(on_failure, config.get("FunctionName", ""), event, result)

    threading.Thread(target=run, daemon=True).start()


lambda_svc.invoke_async_with_retry = invoke_async_with_retry

if len(sys.argv) > 2:
    parent = int(sys.argv[2])

    def watch_parent():
        while True:
            try:
                os.kill(parent, 0)
            except OSError:
                os._exit(0)
            time.sleep(1)

    threading.Thread(target=watch_parent, daemon=True).start()

sys.argv = ["ministack"]
ministack.app.main()
