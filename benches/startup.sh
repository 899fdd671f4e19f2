#!/usr/bin/env bash
# Start-up time: milliseconds from exec to the "ledger ready" log line of `ledger serve`, then stops it.
# Build first (`cargo build --release`); configure with LEDGER__* variables, e.g. for the shared backend:
#   LEDGER__BACKEND__KIND=shared LEDGER__AUTH__JWT_SECRET=... benches/startup.sh
set -u
start=$(date +%s%N)
coproc L { exec ./target/release/ledger serve 2>&1; }
while IFS= read -r line <&"${L[0]}"; do
  case "$line" in *'"ledger ready'*) end=$(date +%s%N); break;; esac
done
kill -TERM "$L_PID"; wait "$L_PID" 2>/dev/null
echo $(( (end - start) / 1000000 ))
