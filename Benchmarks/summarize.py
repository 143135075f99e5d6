#!/usr/bin/env python3
"""Condenses `swift package benchmark` text output to one line per benchmark: p50 time and allocations."""
import re
import sys

text = sys.stdin.read()
for block in re.split(r"\n(?=[^\n│╒╞├╘═].*\n╒)", text):
    lines = block.strip().splitlines()
    if len(lines) < 3 or not lines[1].startswith("╒"):
        continue
    values = {}
    for line in lines:
        if line.startswith("│ Malloc") or line.startswith("│ Time"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            values[cells[0].split(" (")[0]] = cells[3]
    print(f"| {lines[0]} | {values.get('Time', '?')} | {values.get('Malloc', '?')} |")
