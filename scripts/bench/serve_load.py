#!/usr/bin/env python3
"""A bounded load against a server's `POST /embed`: CLIENTS threads, each sending REQUESTS requests
of one review (from datasets/fine-foods) one after another, for at most SECONDS in all; prints one
JSON line with the requests answered, requests per second, and the p50 and p99 latency.
Standard library only.

Usage:
    python scripts/bench/serve_load.py URL CLIENTS REQUESTS SECONDS
"""
import csv
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

url, clients, requests, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
root = os.path.join(os.path.dirname(__file__), "../..")
with open(os.path.join(root, "datasets/fine-foods/testing_data.csv"), newline="") as f:
    reviews = [row["review"] for row in csv.DictReader(f)][:512]
latencies, errors = [], []
lock = threading.Lock()
deadline = time.monotonic() + seconds


def client(c):
    for r in range(requests):
        if time.monotonic() > deadline:
            return
        body = json.dumps({"inputs": reviews[(c * requests + r) % len(reviews)]}).encode()
        request = urllib.request.Request(url, body, {"content-type": "application/json"})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
            with lock:
                latencies.append(time.monotonic() - start)
        except Exception as e:  # counted, not raised: the figure says how many failed
            with lock:
                errors.append(str(e))


threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
start = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else None
print(json.dumps({
    "clients": clients, "answered": len(latencies), "errors": len(errors),
    "requests_per_second": round(len(latencies) / elapsed, 1),
    "p50_ms": round(q(0.50), 1), "p99_ms": round(q(0.99), 1),
    "mean_ms": round(statistics.mean(latencies) * 1000, 1),
}))
