#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Turns the JSON written by bench/run_cpu_benchmarks.sh into the Markdown tables of RESULTS.md.

Every headline figure is a ratio against a baseline measured in the same run.
"""

import json
import platform
import subprocess
import sys
from pathlib import Path


def load_gbench(*paths: Path) -> dict:
    """run name -> the fastest repetition (noise on a shared machine only ever adds time)."""
    rows = {}
    for path in paths:
        for b in json.loads(path.read_text())["benchmarks"]:
            if b.get("run_type") == "aggregate":
                continue
            name = b.get("run_name", b["name"]).replace("/real_time", "")
            if name not in rows or b["real_time"] < rows[name]["real_time"]:
                rows[name] = b
    return rows


def per_iter_seconds(b: dict) -> float:
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
    return b["real_time"] * scale


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    out = Path(sys.argv[1])
    step = load_gbench(out / "step_aaren.json", out / "step_kv.json")
    scan = load_gbench(out / "scan.json", out / "model.json")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(f"Machine: {cpu_model()}, {nproc} cores; one run of bench/run_cpu_benchmarks.sh; each "
          "figure is the fastest of its repetitions (10 for the Aaren step, 3 for the KV-cache "
          "step, 5 for the scan and model benchmarks, 3 for PyTorch), repetitions randomly "
          "interleaved across benchmarks.\n")

    print("### Streaming step vs KV-cache step (one session, 1 thread, D=256 H=8 L=4)\n")
    print("| history (tokens) | Aaren step | KV-cache step | KV / Aaren |")
    print("|---|---|---|---|")
    aaren = {}
    kv = {}
    for h in (1, 1000, 100000, 1000000):
        a = per_iter_seconds(step[f"BM_AarenStep/{h}"])
        k = per_iter_seconds(step[f"BM_KvCacheStep/{h}/iterations:50"])
        aaren[h], kv[h] = a, k
        print(f"| {h:,} | {a * 1e6:.1f} us | {k * 1e6:.1f} us | {k / a:.1f}x |")
    flat = max(aaren.values()) / min(aaren.values())
    print(f"\nAaren step max/min over histories: **{flat:.3f}** (goal <= 1.1). "
          f"KV-cache step / Aaren step at 100k tokens: **{kv[100000] / aaren[100000]:.1f}x**.\n")

    print("### Continuous batching: one Forward steps S sessions by one token each\n")
    print("| sessions per Forward | 1 thread | 2 threads | tokens/s (2 threads) | vs one session per Forward |")
    print("|---|---|---|---|---|")
    single = per_iter_seconds(step["BM_AarenStepBatch/sessions:1/threads:2"])
    for n in (1, 16, 256):
        t1 = per_iter_seconds(step[f"BM_AarenStepBatch/sessions:{n}/threads:1"])
        t2 = per_iter_seconds(step[f"BM_AarenStepBatch/sessions:{n}/threads:2"])
        print(f"| {n} | {t1 * 1e6:,.0f} us | {t2 * 1e6:,.0f} us | {n / t2:,.0f} | "
              f"{single * n / t2:.1f}x |")
    print()

    probe1 = per_iter_seconds(scan["BM_ParallelismProbe/1"])
    probe2 = per_iter_seconds(scan["BM_ParallelismProbe/2"])
    print(f"Parallelism probe (the same dependent FP chain on each thread): 1 thread "
          f"{probe1 * 1e3:.0f} ms, 2 threads {probe2 * 1e3:.0f} ms, i.e. the 2 vCPUs deliver "
          f"**{2 * probe1 / probe2:.2f} cores** of throughput in this run.\n")

    print("### Scan path (N=65536, D=256, H=8)\n")
    seq = per_iter_seconds(scan["BM_ScanSequential"])
    print("| stage | time | tokens/s | vs sequential recurrence (1 thread) | vs memcpy (same threads) |")
    print("|---|---|---|---|---|")
    for t in (1, 2):
        s = per_iter_seconds(scan[f"BM_ScanParallel/{t}"])
        m = per_iter_seconds(scan[f"BM_Memcpy/{t}"])
        print(f"| scan, {t} thread(s) | {s * 1e3:.2f} ms | {65536 / s / 1e6:.2f} M | "
              f"{seq / s:.2f}x | {s / m:.2f}x memcpy time |")
    print(f"| sequential recurrence, 1 thread | {seq * 1e3:.2f} ms | {65536 / seq / 1e6:.2f} M | 1.00x | |")
    for t in (1, 2):
        m = per_iter_seconds(scan[f"BM_Memcpy/{t}"])
        print(f"| memcpy of the bytes read, {t} thread(s) | {m * 1e3:.2f} ms | | | 1.00x |")

    print("\n### Whole-model forward vs PyTorch 1.13 reference module (N=65536, L=4, d_ff=1024)\n")
    print("| threads | Aaren Serve CPU backend | PyTorch reference (best chunk size) | speed-up |")
    print("|---|---|---|---|")
    for t in (1, 2):
        c = per_iter_seconds(scan[f"BM_ModelForward/{t}/iterations:3"])
        p = json.loads((out / f"pytorch_t{t}.json").read_text())
        print(f"| {t} | {c:.2f} s ({65536 / c:,.0f} tok/s) | {p['seconds']:.2f} s "
              f"({p['tokens_per_s']:,.0f} tok/s, chunk {p['chunk_size']}) | **{p['seconds'] / c:.2f}x** |")

    print("\n### State bytes per session vs a Transformer KV cache\n")
    print((out / "state_bytes.md").read_text())


if __name__ == "__main__":
    main()
