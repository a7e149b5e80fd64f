#!/usr/bin/env bash
# The bare-metal demo: a monitor built on asreloc's relocation_manager keeps
# its stub inside a CPL 3 guest's address space on an emulated x86-64 CPU
# (QEMU, TCG) and moves it out of the guest's way. The serial log is shown as
# it happens; the run passes only with exit status 33, the kernel's PASS line
# and the summary line with every counter positive and guest_memory=ok.
#
# usage: demo.sh                        configure (once) and build the kernel in
#                                       $ASRELOC_DEMO_BUILD_DIR (default build/demo), boot it
#        demo.sh [--qemu PATH] [--timeout S] --kernel ELF [--kernel ELF...]
#                                       boot kernels already built (CMake's run_demo, ctest)
# ASRELOC_SEED=N makes the run replay one seed (placements, victims).
set -u
here=$(cd "$(dirname "$0")" && pwd)
qemu=qemu-system-x86_64
timeout_s=120
declare -a kernels=()
while [ $# -gt 0 ]; do
    case "$1" in
    --qemu) qemu=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --kernel) kernels+=("$2"); shift 2 ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if [ ${#kernels[@]} -eq 0 ]; then
    root=$(cd "$here/../.." && pwd)
    build=${ASRELOC_DEMO_BUILD_DIR:-$root/build/demo}
    if [ ! -f "$build/CMakeCache.txt" ]; then
        generator=()
        command -v ninja >/dev/null && generator=(-G Ninja)
        cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DASRELOC_BUILD_TESTS=OFF || exit 1
    fi
    cmake --build "$build" --target bare_metal_demo -j2 || exit 1
    kernels=("$build/examples/bare_metal/bare_metal_demo.elf")
fi
if ! command -v "$qemu" >/dev/null; then
    echo "demo.sh: $qemu not found (Debian: apt-get install qemu-system-x86)" >&2
    exit 1
fi

n='[1-9][0-9]*'
summary="asreloc-demo: conflicts=$n free_relocations=$n victim_relocations=$n shadow_accesses=$n hops=$n fast_traps=$n slow_traps=$n guest_memory=ok"
declare -a boots=()
for k in "${kernels[@]}"; do boots+=(--boot "$k" "$summary" "demo: PASS .*"); done
exec bash "$here/run_qemu.sh" --qemu "$qemu" --timeout "$timeout_s" --pass-code 33 "${boots[@]}"
