#!/usr/bin/env bash
# Runs containers-storage's own bats suite (its tests/*.bats, fetched by
# you: this repository does not carry it) against one or more overlay
# mount programs, as fuse-overlayfs's CI does (STORAGE_DRIVER=overlay,
# STORAGE_OPTION=overlay.mount_program=PROGRAM), and prints passed /
# failed / skipped per program, then each test whose result differs.
#
#   tools/cs-bats.sh SUITE_DIR PROGRAM [PROGRAM...]
#
# SUITE_DIR holds the .bats files and helpers.bash (a containers/storage
# checkout's tests/ directory, or the checkout itself). Needs root, bats
# and the containers-storage CLI (Debian: apt-get install bats
# containers-storage); STORAGE_BINARY overrides the CLI's path, TESTS
# (space-separated .bats names) limits the files run. Each program's TAP
# output is kept in $OUT (default /tmp/cs-bats-out) as NAME.tap.
set -euo pipefail

if [ $# -lt 2 ]; then
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
fi
suite=$(readlink -f "$1")
shift
[ -f "$suite/helpers.bash" ] || [ ! -d "$suite/tests" ] || suite=$suite/tests
[ -f "$suite/helpers.bash" ] || { echo "cs-bats: no helpers.bash in $suite" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "cs-bats: run as root (the suite mounts)" >&2; exit 2; }
command -v bats >/dev/null || { echo "cs-bats: bats is missing (apt-get install bats)" >&2; exit 2; }
cli=${STORAGE_BINARY:-$(command -v containers-storage || true)}
[ -x "$cli" ] || { echo "cs-bats: containers-storage CLI is missing (apt-get install containers-storage)" >&2; exit 2; }
out=${OUT:-/tmp/cs-bats-out}
mkdir -p "$out"

cd "$suite"
files=${TESTS:-$(ls ./*.bats)}
names=()
for prog in "$@"; do
	prog=$(readlink -f "$prog")
	[ -x "$prog" ] || { echo "cs-bats: $prog is not executable" >&2; exit 2; }
	name=$(basename "$prog")
	names+=("$name")
	echo "== $name: $("$prog" --version 2>/dev/null | head -1)" >&2
	# The suite's own failures are the measurement, not an error here.
	env STORAGE_BINARY="$cli" STORAGE_DRIVER=overlay OS=Linux \
		STORAGE_OPTION="overlay.mount_program=$prog" \
		bats --tap $files >"$out/$name.tap" 2>&1 || true
done

# One line per test: "RESULT<TAB>NAME", RESULT one of pass, fail, skip.
results() {
	sed -n -E \
		-e 's/^ok [0-9]+ (.*) # skip.*/skip\t\1/p;t' \
		-e 's/^ok [0-9]+ (.*)/pass\t\1/p;t' \
		-e 's/^not ok [0-9]+ (.*)/fail\t\1/p' "$out/$1.tap"
}

printf '%-24s %7s %7s %7s\n' program passed failed skipped
for n in "${names[@]}"; do
	r=$(results "$n")
	printf '%-24s %7d %7d %7d\n' "$n" \
		"$(grep -c '^pass' <<<"$r" || true)" \
		"$(grep -c '^fail' <<<"$r" || true)" \
		"$(grep -c '^skip' <<<"$r" || true)"
done
for n in "${names[@]}"; do
	echo
	echo "$n, not passed:"
	results "$n" | grep -v '^pass' | sed 's/^/  /' || echo "  (none)"
done
if [ ${#names[@]} -gt 1 ]; then
	echo
	echo "tests whose results differ:"
	join_all=$(results "${names[0]}" | awk -F'\t' '{print $2 "\t" $1}' | sort)
	for n in "${names[@]:1}"; do
		join_all=$(join -t $'\t' <(echo "$join_all") \
			<(results "$n" | awk -F'\t' '{print $2 "\t" $1}' | sort))
	done
	awk -F'\t' '{ for (i = 3; i <= NF; i++) if ($i != $2) { print "  " $0; break } }' \
		<<<"$join_all" || true
	echo "  (columns: test, then ${names[*]})"
fi
