"""Serve benchmark: samples/s and MB/s that ``hfstream serve`` delivers to 1 and to N clients.

Run::

    hfstream bench serve [--dataset PATH] [--sequence-length 512] [--batch-size 256]
                         [--samples 50000] [--clients 1 8] [--repeats 3] [--json]

The server runs as ``hfstream serve`` in its own process (as in production, worker subprocess
included) on a free loopback port; each client is an ``EirClient`` thread in this process that
repeats ``getData(batch_size)``, as EIR's training connections do, until the clients together
hold ``--samples`` samples. Timing starts after every client has received a first batch (the
worker's start-up is excluded). Side by side, the baseline: the same samples made in-process
(corpus + chunking, no socket, no JSON). Each figure is the median of ``--repeats`` runs. MB/s counts the JSON frames received (each text
travels twice: as input and as target); text MB/s counts the UTF-8 bytes of the texts, once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from hfstream.bench import bench_parser, default_dataset, print_table

_REPO = str(Path(__file__).resolve().parents[2])


def in_process(dataset: str, sequence_length: int, num_samples: int) -> dict[str, float]:
    """Make ``num_samples`` samples without a server: the ceiling for the figures below."""
    from hfstream.source.corpus import HuggingFaceStreamingCorpus
    from hfstream.eir.samples import sample_texts

    with HuggingFaceStreamingCorpus(dataset, epochs=None) as corpus:
        texts = sample_texts(corpus.stream(), sequence_length)
        next(texts)  # worker started
        t0 = time.perf_counter()
        text_bytes = 0
        for _, text in zip(range(num_samples), texts):
            text_bytes += len(text.encode())
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples": num_samples, "wire_bytes": 0, "text_bytes": text_bytes}


def start_server(dataset: str, sequence_length: int) -> tuple[subprocess.Popen, str]:
    """``hfstream serve`` on a free port; returns the process and its URL once it is ready."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "hfstream.cli.main", "serve", "--dataset", dataset,
                             "--port", "0", "--sequence-length", str(sequence_length)],
                            stderr=subprocess.PIPE, text=True, env=env)
    log, url = [], None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        if not line:
            break
        log.append(line)
        found = re.search(r" at (ws://\S+) ", line)
        url = found.group(1) if found else url
        if "ready" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]
            return proc, url  # type: ignore[return-value]
    proc.kill()
    raise RuntimeError("hfstream serve did not become ready:\n" + "".join(log[-20:]))


def clients_run(url: str, num_clients: int, num_samples: int, batch_size: int) -> dict[str, float]:
    """``num_clients`` threads, each repeating getData, until they hold ``num_samples`` in all."""
    from hfstream.eir.client import EirClient

    clients = [EirClient(url, timeout=60).connect() for _ in range(num_clients)]
    for client in clients:  # warm: the first batch may wait for the server's read-ahead
        client.get_data(batch_size)
    counts = [0] * num_clients
    text_bytes = [0] * num_clients
    wire0 = [c.num_bytes_received for c in clients]
    per_client = -(-num_samples // num_clients)
    barrier = threading.Barrier(num_clients + 1)

    def run(k: int) -> None:
        client = clients[k]
        barrier.wait()
        while counts[k] < per_client:
            samples = client.get_data(min(batch_size, per_client - counts[k])) or []
            counts[k] += len(samples)
            text_bytes[k] += sum(len(s["inputs"]["text_output"].encode()) for s in samples)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(num_clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    wire = sum(c.num_bytes_received - w for c, w in zip(clients, wire0))
    for client in clients:
        client.close()
    return {"seconds": seconds, "samples": sum(counts), "wire_bytes": wire, "text_bytes": sum(text_bytes)}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median rate."""
    return sorted(runs, key=lambda r: r["samples"] / r["seconds"])[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("serve", __doc__)
    p.add_argument("--sequence-length", type=int, default=512, help="words per sample (0: documents)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per getData (EIR's batch size)")
    p.add_argument("--samples", type=int, default=50000, help="samples per measurement")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is shown)")
    args = p.parse_args(argv)
    dataset = args.dataset or default_dataset()

    runs: dict[str, list[dict[str, float]]] = {"in-process (no server)": []}
    proc, url = start_server(dataset, args.sequence_length)
    try:
        for _ in range(args.repeats):  # interleaved, so that machine noise hits every row alike
            runs["in-process (no server)"].append(in_process(dataset, args.sequence_length, args.samples))
            for n in args.clients:
                runs.setdefault(f"{n} client{'s' if n > 1 else ''}", []).append(
                    clients_run(url, n, args.samples, args.batch_size))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()

    results = {name: _median(r) for name, r in runs.items()}
    rows, summary = [], {}
    one = next((r for name, r in results.items() if name == "1 client"), None)
    for name, r in results.items():
        rate = r["samples"] / r["seconds"]
        summary[name] = {"samples": r["samples"], "seconds": round(r["seconds"], 3),
                         "samples_per_s": round(rate),
                         "mb_per_s": round(r["wire_bytes"] / 1e6 / r["seconds"], 1),
                         "text_mb_per_s": round(r["text_bytes"] / 1e6 / r["seconds"], 1)}
        vs_one = f"{rate / (one['samples'] / one['seconds']):.2f}x" if one else "-"
        rows.append([name, f"{r['samples']:,}", f"{r['seconds']:.2f}", f"{rate:,.0f}",
                     f"{r['wire_bytes'] / 1e6 / r['seconds']:,.1f}" if r["wire_bytes"] else "-",
                     f"{r['text_bytes'] / 1e6 / r['seconds']:,.1f}", vs_one])
    if args.json:
        print(orjson.dumps({"dataset": dataset, "sequence_length": args.sequence_length,
                            "batch_size": args.batch_size, **summary}, option=orjson.OPT_INDENT_2).decode())
        return 0
    mode = "one sample per document" if args.sequence_length == 0 else f"{args.sequence_length}-word chunks"
    print(f"dataset: {dataset}; {mode}; getData batch {args.batch_size}; {os.cpu_count()} CPUs; "
          f"server: hfstream serve in its own process on {url}")
    print_table(f"served samples (clients: threads with EirClient, timed after a first batch each; "
                f"median of {args.repeats})",
                ["who reads", "samples", "seconds", "samples/s", "MB/s", "text MB/s", "vs 1 client"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
