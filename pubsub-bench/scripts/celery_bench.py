"""The Celery side of `cargo run --release -p pubsub-bench --bin tasks`.

Both the Celery app the bench's worker runs (`celery -A celery_bench worker`,
started and stopped by the bench) and the driver that runs the workloads
against it and prints one line of JSON:

    python celery_bench.py drive REDIS_URL QUEUE TASKS GROUP LATENCY

Celery 5 with Redis as broker and result backend, its defaults plus
`task_acks_late=True`. The queue name comes from CELERY_BENCH_QUEUE (the
worker's `-Q` and the driver's default queue), so runs do not share one.
"""

import json
import os
import sys
import time

from celery import Celery, chord, group

REDIS_URL = os.environ.get("CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("CELERY_BENCH_QUEUE", "celery-bench")

app = Celery("celery_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.task_acks_late = True
app.conf.task_default_queue = QUEUE


@app.task(name="add")
def add(x, y):
    return x + y


@app.task(name="tsum")
def tsum(values):
    return sum(values)


def drive(n, group_size, latency_n):
    timeout = 600
    out = {"celery": __import__("celery").__version__}
    # Waits for the worker: the first task runs once it consumes the queue.
    add.delay(0, 0).get(timeout=120)

    t0 = time.perf_counter()
    results = [add.delay(i, i) for i in range(n)]
    t1 = time.perf_counter()
    for i, r in enumerate(results):
        assert r.get(timeout=timeout) == 2 * i
    t2 = time.perf_counter()
    out["delay_get"] = {"n": n, "enqueue_s": t1 - t0, "total_s": t2 - t0}

    t0 = time.perf_counter()
    got = group(add.s(i, i) for i in range(group_size)).apply_async().get(timeout=timeout)
    t1 = time.perf_counter()
    assert got == [2 * i for i in range(group_size)]
    out["group"] = {"n": group_size, "total_s": t1 - t0}

    t0 = time.perf_counter()
    got = chord(add.s(i, i) for i in range(group_size))(tsum.s()).get(timeout=timeout)
    t1 = time.perf_counter()
    assert got == sum(2 * i for i in range(group_size))
    out["chord"] = {"n": group_size, "total_s": t1 - t0}

    lat = []
    for i in range(latency_n):
        t0 = time.perf_counter()
        assert add.delay(i, i).get(timeout=timeout) == 2 * i
        lat.append(time.perf_counter() - t0)
    out["latency_s"] = lat
    print(json.dumps(out))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "drive":
    REDIS_URL = sys.argv[2]
    app.conf.broker_url = REDIS_URL
    app.conf.result_backend = REDIS_URL
    app.conf.task_default_queue = sys.argv[3]
    drive(int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
