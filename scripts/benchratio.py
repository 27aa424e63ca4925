#!/usr/bin/env python3
"""Summarise `go test -bench -count N` output: median, min and max MB/s per
benchmark, and the ratio of each `format/...` benchmark to the `rawgcm/...`
baseline with the same suffix, measured in the same run. Prints markdown."""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) MB/s)?")


def main(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m and m.group(3):
                runs[m.group(1)].append(float(m.group(3)))
    print("| benchmark | median MB/s | min | max | runs | ratio to baseline (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, vals in runs.items():
        med = statistics.median(vals)
        ratio = ""
        if "/format/" in name:
            base = runs.get(name.replace("/format/", "/rawgcm/"))
            if base:
                ratio = "%.2f" % (med / statistics.median(base))
        print("| %s | %.0f | %.0f | %.0f | %d | %s |" % (name, med, min(vals), max(vals), len(vals), ratio))


if __name__ == "__main__":
    main(sys.argv[1])
