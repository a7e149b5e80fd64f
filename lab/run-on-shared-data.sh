#!/bin/sh
# Regenerates the committed policy-lab results (lab/results/) from the shared
# data set with one command: installs the Debian packages it needs (the `lab`
# line of scripts/packages.list), builds asreloc-lab with the `lab` preset
# (Release) in build/lab, replays every guest of ../shared/data through every
# policy combination, and copies the CSVs and the plots into lab/results/.
#   lab/run-on-shared-data.sh [DATA_DIR] [extra asreloc-lab options...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
data=${1:-$root/../shared/data}
[ $# -gt 0 ] && shift
data=$(cd "$data" && pwd)  # the build below runs from the root
build=$root/build/lab
out=$build/lab-results

"$root/scripts/ensure-packages" lab
cd "$root"
cmake --preset lab >/dev/null
cmake --build --preset lab -j2
rm -rf "$out"
# Windows: the guest's own space; 4 GiB and 1 GiB (a 64-bit guest folded as if
# it had only that much); 1 MiB, where even the access traces' footprints fill
# the window and victims, shadow accesses and hops happen.
status=0
"$build/lab/asreloc-lab" --data "$data" --out "$out" --window native,4G,1G,1M "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
mkdir -p "$here/results"
cp "$out"/results.csv "$out"/summary.csv "$out"/summary.md "$out"/costs.csv "$here/results/"
for f in overhead.png hops_to_settle.png shadow_over_time.png plots.gp; do
    [ -f "$out/$f" ] && cp "$out/$f" "$here/results/"
done
echo "lab results in $here/results (exit status of the run: $status)"
