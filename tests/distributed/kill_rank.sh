#!/usr/bin/env bash
# Kills one rank of a running MPI job with SIGKILL and checks that the job
# stops (within the timeout, no hang) with a nonzero exit and a message that
# names the killed rank.
#
#   kill_rank.sh RANK SECONDS -- mpiexec -n 2 program args...
set -uo pipefail
rank=$1 delay=$2
shift 3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" >"$log" 2>&1 &
launcher=$!
sleep "$delay"
victim=""
for pid in $(pgrep -P "$launcher") $(pgrep -g "$(ps -o pgid= "$launcher" | tr -d ' ')"); do
  if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$rank"; then
    victim=$pid
    break
  fi
done
if [[ -z $victim ]]; then
  echo "kill_rank: no process of rank $rank found after ${delay}s (did the job end already?)"
  cat "$log"
  kill "$launcher" 2>/dev/null
  exit 1
fi
kill -KILL "$victim"
echo "kill_rank: killed rank $rank (pid $victim)"
wait "$launcher"
code=$?
cat "$log"
echo "kill_rank: the job exited with code $code"
if [[ $code -eq 0 ]]; then
  echo "kill_rank: FAILED: the job reported success after rank $rank was killed"
  exit 1
fi
if ! grep -q "rank $rank" "$log"; then
  echo "kill_rank: FAILED: nothing in the job's output names rank $rank"
  exit 1
fi
echo "kill_rank: passed"
