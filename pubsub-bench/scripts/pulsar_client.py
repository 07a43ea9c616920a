"""The Pulsar workloads of pubsub-bench written against the Python
`pulsar-client` (the official C++ client underneath), so the SDK can be
compared with it on the same broker in the same run. pubsub-bench runs it:

    python pulsar_client.py publish URL TOPIC N SIZE
    python pulsar_client.py e2e URL TOPIC N SIZE CONSUMERS

publish: N messages with send_async in batches of 100, the receipts of a
batch awaited before the next (as the SDK's send_batch and the Rust
baseline do). e2e: CONSUMERS consumers of one Shared subscription (receiver
queue 1,000) each acking every message while N are published as above.
Prints one JSON line: {"seconds": time from the first send to the last
receipt (publish) or the last message received (e2e), "received": count}.
"""

import json
import sys
import threading
import time

import pulsar

BATCH = 100
POLL_MS = 100


def send(producer, n, payload):
    left = n
    while left > 0:
        k = min(left, BATCH)
        done = threading.Semaphore(0)
        failed = []

        def receipt(result, _msg_id):
            if result != pulsar.Result.Ok:
                failed.append(result)
            done.release()

        for _ in range(k):
            producer.send_async(payload, receipt)
        for _ in range(k):
            done.acquire()
        if failed:
            raise RuntimeError(f"send failed: {failed[0]}")
        left -= k


def main():
    mode, url, topic, n, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    consumers = int(sys.argv[6]) if mode == "e2e" else 0
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    payload = b"x" * size
    received = [0]
    last = [0.0]
    lock = threading.Lock()
    threads = []
    for _ in range(consumers):
        c = client.subscribe(
            topic,
            "bench",
            consumer_type=pulsar.ConsumerType.Shared,
            receiver_queue_size=1000,
        )

        def run(c=c):
            while True:
                with lock:
                    if received[0] >= n:
                        return
                try:
                    m = c.receive(timeout_millis=POLL_MS)
                except pulsar.Timeout:
                    continue
                c.acknowledge(m)
                with lock:
                    received[0] += 1
                    last[0] = time.monotonic()

        threads.append(threading.Thread(target=run, daemon=True))
    producer = client.create_producer(topic, batching_enabled=False, block_if_queue_full=True)
    for t in threads:
        t.start()
    started = time.monotonic()
    send(producer, n, payload)
    if mode == "publish":
        last[0] = time.monotonic()
        received[0] = n
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    print(json.dumps({"seconds": last[0] - started, "received": received[0]}))
    client.close()


if __name__ == "__main__":
    main()
