"""The benchmark's two workloads on DBOS with a SQLite system database, at
its default durability. Every step is a @DBOS.step() no-op; workflows are
called directly (a handle's get_result() polls once a second).

Usage: python bench.py WORKLOAD EXECUTIONS IN_FLIGHT DB_PATH [wal]
Prints one JSON line of figures. With `wal`, the database file is switched to
SQLite's WAL journal first (still synchronous=FULL, Baton's setting), to
compare at the same storage settings as well as at DBOS's defaults.
"""

import asyncio
import json
import os
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOS, DBOSConfig

workload = sys.argv[1] if len(sys.argv) > 1 else "sequence-10"
total = int(sys.argv[2]) if len(sys.argv) > 2 else 500
in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 8
db_path = sys.argv[4] if len(sys.argv) > 4 else "dbos-bench.sqlite"
wal = len(sys.argv) > 5 and sys.argv[5] == "wal"

if wal:
    # The journal mode is kept in the file, so DBOS's own connections use it.
    with sqlite3.connect(db_path) as c:
        c.execute("PRAGMA journal_mode=WAL")

config: DBOSConfig = {
    "name": "baton-bench",
    "system_database_url": f"sqlite:///{db_path}",
    "run_admin_server": False,
}
DBOS(config=config)


@DBOS.step()
def noop(value):
    return value


@DBOS.workflow()
def sequence(n):
    value = n
    for _ in range(10):
        value = noop(value)
    return value


@DBOS.step()
async def noop_async(value):
    return value


@DBOS.workflow()
async def fan_out(n):
    root = await noop_async(n)
    branches = await asyncio.gather(*[noop_async(root) for _ in range(10)])
    return await noop_async(len(branches))


def run_sequence(count):
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(sequence, range(count)))


async def run_fan_out(count):
    gate = asyncio.Semaphore(in_flight)

    async def one(n):
        async with gate:
            await fan_out(n)

    await asyncio.gather(*[one(n) for n in range(count)])


def main():
    DBOS.launch()
    steps = 10 if workload == "sequence-10" else 12
    runner = (
        run_sequence
        if workload == "sequence-10"
        else (lambda count: asyncio.run(run_fan_out(count)))
    )
    runner(min(50, total))  # warm up
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    runner(total)
    seconds = time.perf_counter() - start
    # What DBOS's connections run with: the file's journal mode and the
    # library's default synchronous level (DBOS sets neither).
    with sqlite3.connect(db_path) as c:
        journal_mode = c.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
            c.execute("PRAGMA synchronous").fetchone()[0], "?"
        )
    print(
        json.dumps(
            {
                "system": "dbos-wal" if wal else "dbos",
                "durability": f"SQLite journal_mode={journal_mode}, synchronous={synchronous}",
                "workload": workload,
                "executions": total,
                "in_flight": in_flight,
                "steps_per_execution": steps,
                "seconds": seconds,
                "executions_per_s": total / seconds,
                "steps_per_s": total * steps / seconds,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
        ),
        flush=True,
    )
    DBOS.destroy()


if __name__ == "__main__":
    main()
