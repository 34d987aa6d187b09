# Shared by the nested scenarios' l1.sh (sourced): `check` runs one command and prints one
# `RESULT name pass|fail` line, which tests/src/nested.rs collects.

# check NAME WANT_STATUS PATTERN CMD...: runs CMD; passes when it exits WANT_STATUS and its
# output (stdout and stderr) contains PATTERN (grep -E). On failure the output's tail follows.
check() {
    local name=$1 want=$2 pattern=$3 out rc
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" = "$want" ] && printf '%s\n' "$out" | grep -qE -- "$pattern"; then
        echo "RESULT $name pass"
    else
        echo "RESULT $name fail (status $rc, wanted $want and /$pattern/)"
        printf '%s\n' "$out" | tail -n 25 | sed "s/^/  $name| /"
    fi
}

# wait_for FILE PATTERN [SECONDS]: polls until FILE contains PATTERN (grep -E).
wait_for() {
    local i
    for i in $(seq $((${3:-30} * 10))); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
