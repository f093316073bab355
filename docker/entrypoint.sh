#!/bin/bash
# Container entrypoint (under tini, which reaps zombies): runs `deepspeed "$@"` and, on SIGTERM or
# SIGINT, signals every rank at once.
#
# Why not just `deepspeed` (DEPENDENCY-FACTS.md): a SIGTERM to the `deepspeed` command kills only
# it and orphans the ranks; one to its launcher (launch.py) reaches the ranks one at a time with a
# hard-coded 30 s each before SIGKILL, and then the launcher exits 1 instead of the ranks' code.
# Here the launchers get no signal: the ranks stop together on the same step, checkpoint, exit
# 75 (retry) or 78 (config error), and launch.py / deepspeed pass that code up to Kubernetes.
set -u

children() {  # direct children of pid $1
    cat "/proc/$1/task/$1/children" 2>/dev/null || true
}

deepspeed "$@" &
runner=$!

forward() {
    local sig=$1 ranks=() launcher rank
    for launcher in $(children "$runner"); do
        for rank in $(children "$launcher"); do ranks+=("$rank"); done
    done
    if [ ${#ranks[@]} -eq 0 ]; then
        # Ranks not started yet: nothing to checkpoint, stop the launchers themselves.
        echo "entrypoint: $sig before the ranks started; stopping deepspeed" >&2
        kill -s "$sig" $(children "$runner") "$runner" 2>/dev/null
    else
        echo "entrypoint: forwarding $sig to ranks ${ranks[*]}" >&2
        kill -s "$sig" "${ranks[@]}" 2>/dev/null
    fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT

# `wait` returns early whenever a trapped signal arrives: keep waiting until deepspeed exits.
while true; do
    wait "$runner"
    rc=$?
    kill -0 "$runner" 2>/dev/null || break
done
exit "$rc"
