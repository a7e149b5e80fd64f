#!/usr/bin/env bash
# Boots kernel images under QEMU (TCG) and judges each run by BOTH its exit
# status and its serial log: a triple fault under -no-reboot exits 0, so
# "not a failure" never counts as a pass.
#
# usage: run_qemu.sh [--qemu PATH] [--timeout SECONDS] [--pass-code N] [--skip-code N]
#                    --boot KERNEL PATTERN... [--boot KERNEL PATTERN...]
# Each PATTERN is an extended regular expression that some whole line of that
# boot's serial log (CR stripped, shown as it arrives) must match. A boot whose kernel reports
# "skip" (isa-debug-exit code 0x12 -> 37, e.g. no LA57 on this CPU) is noted
# and does not fail the run; when every boot skipped the script exits 77,
# which ctest reports as skipped.
set -u

qemu=qemu-system-x86_64
timeout_s=60
pass_code=33
skip_code=37
declare -a kernels=() patterns=()
current=-1
while [ $# -gt 0 ]; do
    case "$1" in
    --qemu) qemu=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --pass-code) pass_code=$2; shift 2 ;;
    --skip-code) skip_code=$2; shift 2 ;;
    --boot) current=$((current + 1)); kernels[$current]=$2; patterns[$current]=""; shift 2 ;;
    *)
        if [ $current -lt 0 ]; then echo "run_qemu.sh: pattern '$1' before --boot" >&2; exit 2; fi
        patterns[$current]+="$1"$'\n'; shift ;;
    esac
done
if [ $current -lt 0 ]; then echo "run_qemu.sh: nothing to boot" >&2; exit 2; fi

failed=0
passed=0
for i in $(seq 0 $current); do
    kernel=${kernels[$i]}
    log=$(mktemp)
    echo "=== booting $kernel"
    timeout "$timeout_s" "$qemu" -accel tcg -cpu max -m 128M -no-reboot -nodefaults -display none \
        -serial stdio -monitor none -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -kernel "$kernel" ${ASRELOC_SEED:+-append "seed=$ASRELOC_SEED"} </dev/null | sed -u 's/\r$//' | tee "$log"
    status=${PIPESTATUS[0]}
    if [ "$status" = "$skip_code" ]; then
        echo "=== $kernel: skipped (exit $status)"
        rm -f "$log"
        continue
    fi
    ok=1
    if [ "$status" != "$pass_code" ]; then
        case "$status" in
        124) why="timed out after ${timeout_s}s" ;;
        0) why="exit 0: a triple fault (-no-reboot) or QEMU quit without isa-debug-exit" ;;
        *) why="exit $status" ;;
        esac
        echo "=== $kernel: FAIL: $why, expected $pass_code"
        ok=0
    fi
    while IFS= read -r pattern; do
        [ -z "$pattern" ] && continue
        if ! grep -Eq -- "^($pattern)\$" "$log"; then
            echo "=== $kernel: FAIL: no serial line matches: $pattern"
            ok=0
        fi
    done <<<"${patterns[$i]}"
    [ $ok = 1 ] && echo "=== $kernel: pass (exit $status, all expected lines present)"
    [ $ok = 1 ] && passed=1
    [ $ok = 1 ] || failed=1
    rm -f "$log"
done
[ $failed = 1 ] && exit 1
[ $passed = 0 ] && exit 77
exit 0
