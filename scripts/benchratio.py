#!/usr/bin/env python3
"""Summarise `go test -bench -count N` output as markdown: median, min and
max MB/s per benchmark, and each benchmark's ratio to its baseline measured
in the same run. Baselines: `X/rawgcm/Y` for `X/format/Y` (raw AES-GCM from
the standard library), and `X/DownloadStream` for every other `X/...`
(one plain Azure SDK download)."""
import re
import statistics
import sys
from collections import OrderedDict

LINE = re.compile(r"^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) MB/s)?")


def baseline(name, runs):
    if "/format/" in name:
        return name.replace("/format/", "/rawgcm/")
    top = name.split("/")[0]
    cand = top + "/DownloadStream"
    if cand in runs and cand != name:
        return cand
    return None


def main(paths):
    runs = OrderedDict()
    for path in paths:
        with open(path) as f:
            for line in f:
                m = LINE.match(line)
                if m and m.group(3):
                    runs.setdefault(m.group(1), []).append(float(m.group(3)))
    print("| benchmark | median MB/s | min | max | runs | ratio to baseline (medians) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, vals in runs.items():
        med = statistics.median(vals)
        ratio = ""
        base = baseline(name, runs)
        if base and base in runs:
            ratio = "%.2f" % (med / statistics.median(runs[base]))
        print("| %s | %.0f | %.0f | %.0f | %d | %s |" % (name, med, min(vals), max(vals), len(vals), ratio))


if __name__ == "__main__":
    main(sys.argv[1:])
