#!/usr/bin/env python3
"""moto server, one request at a time.

`moto_server` answers requests on several threads, and moto's DynamoDB takes
no lock between checking a condition and writing: two concurrent conditional
writes can both succeed, which real DynamoDB never allows. Baton's tests race
coordinators on purpose, so they need the real guarantee; serving requests
one at a time gives it.

Usage: moto-server.py [PORT [PARENT_PID]]   (default 5000, on 127.0.0.1)

With PARENT_PID the server exits once that process is gone, so a test
process that started it leaves nothing running behind.
"""
import os
import signal
import sys
import threading
import time

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def exit_with(parent: int) -> None:
    while True:
        try:
            os.kill(parent, 0)
        except OSError:
            os._exit(0)
        time.sleep(1)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    if len(sys.argv) > 2:
        threading.Thread(target=exit_with, args=(int(sys.argv[2]),), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False)


if __name__ == "__main__":
    main()
