#!/usr/bin/python3
"""Writes a consentctl import CSV file of new subjects for the import
benchmarks: RECORDS users named import-RUN-N, each GB and born 1980, one
in ten objecting to ai_training (as consent-bench preload makes them).

usage: bench/import_file.py PATH RECORDS RUN
"""
import sys

path, records, run = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    f.write("user_id,jurisdiction,birth_date,preferences\n")
    for n in range(records):
        objecting = "ai_training=OBJECTED" if n % 10 == 9 else ""
        f.write(f"import-{run}-{n},GB,1980-01-01,{objecting}\n")
