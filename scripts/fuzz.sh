#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/Targets and runs each for FUZZ_SECONDS (default 60).
#
#   scripts/fuzz.sh                     build, then run every target
#   scripts/fuzz.sh request-head resp   build, then run these targets only
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh   build only
#   scripts/fuzz.sh --reproduce differential Fuzz/Findings/differential-….bin    run one input
#
# How it builds (SwiftPM cannot: a fuzzer is an executable whose `main` is libFuzzer's, and SwiftPM renames
# an executable target's `main`): it needs the normal debug build (`swift build --build-tests`, which
# `make fuzz` and `make test` run). The Portico modules are compiled again, optimized and instrumented for
# coverage and AddressSanitizer (`-sanitize=fuzzer,address`), into .build-fuzz/Modules; so is llhttp, NIO's
# HTTP parser, since the request targets are about what it accepts. Every other dependency (NIO, BoringSSL,
# Yams, …) is linked from the debug build's object files, uninstrumented. hiredis is the system library, also
# uninstrumented (libFuzzer sees the Swift around it; ASan still sees its heap). Steps whose inputs have not
# changed are skipped. libFuzzer's new corpus entries go to .build-fuzz/corpus/<target>, seeded from
# Fuzz/Corpus/<target>, so the seeds in the repository stay small; crashes go to Fuzz/Findings/.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
SWIFTC=${SWIFTC:-swiftc}
CLANG=${CLANG:-clang}
NICE=${FUZZ_NICE:-nice -n 19}
OUT=$ROOT/.build-fuzz
# The Portico sources to fuzz (another tree, such as an exported commit, must match the debug build's dependencies).
SOURCES=${FUZZ_SOURCES:-$ROOT/Sources}
ALL_TARGETS=(request-head differential frame-tracker resp config)

reproduce=""
if [[ ${1:-} == --reproduce ]]; then
    reproduce=$3
    set -- "$2"
fi
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")

DEBUG=$(cd "$ROOT" && readlink -f .build/debug || true)
LINKLIST=$DEBUG/porticoPackageTests.product/Objects.LinkFileList
if [[ ! -f $LINKLIST ]]; then
    echo "fuzz: no debug build with tests in .build/debug; run 'swift build --build-tests' first" >&2
    exit 2
fi

# The dependencies' interfaces: a rebuild of one of them (not of Portico's own modules) means relinking.
DEPENDENCY_MODULES=$(find "$DEBUG/Modules" -maxdepth 1 -name '*.swiftmodule' ! -name 'Portico*' | sort)
DEPENDENCY_STAMP="dependencies:$(stat -c '%n %Y %s' $DEPENDENCY_MODULES | sha256sum | cut -d' ' -f1)"

mkdir -p "$OUT/Modules" "$OUT/obj" "$OUT/bin" "$OUT/corpus" "$ROOT/Fuzz/Findings"

# A fingerprint of the named files' contents and of the rest of the arguments, for skipping what is up to date.
fingerprint() {
    { printf '%s\n' "$*"; for file in "$@"; do [[ -f $file ]] && cat "$file"; done; } | sha256sum | cut -d' ' -f1
}

# true (and records the new fingerprint in $1.stamp once the caller succeeds: see `done_with`) when $1 is
# missing or its inputs changed.
stale() {
    local target=$1
    shift
    current_stamp=$(fingerprint "$@")
    [[ ! -e $target || ! -f $target.stamp || $(cat "$target.stamp") != "$current_stamp" ]]
}
done_with() { echo "$current_stamp" >"$1.stamp"; }

# Every C module the debug build knows about, so the Swift modules' imports of NIO's and Yams' C shims resolve.
CFLAGS_SWIFT=()
while IFS= read -r map; do CFLAGS_SWIFT+=(-Xcc "-fmodule-map-file=$map"); done < <(
    find "$DEBUG" -maxdepth 2 -path '*.build/module.modulemap' | sort
    find "$ROOT/.build/checkouts" -path '*/Sources/*/include/module.modulemap' | sort
    echo "$SOURCES/CHiredis/module.modulemap"
)
while IFS= read -r dir; do CFLAGS_SWIFT+=(-Xcc -I -Xcc "$dir"); done < <(
    find "$ROOT/.build/checkouts" -path '*/Sources/*/include' -type d | sort
)
SWIFTFLAGS=(
    -swift-version 6 -enable-upcoming-feature ExistentialAny -enable-upcoming-feature MemberImportVisibility
    -O -sanitize=fuzzer,address -enable-testing -package-name portico -parse-as-library
    -I "$OUT/Modules" -I "$DEBUG/Modules" "${CFLAGS_SWIFT[@]}"
)

# The Portico modules, in dependency order, each compiled whole into one instrumented object.
MODULES=(PorticoBalancing PorticoConfig PorticoRouting PorticoRESP PorticoProxy PorticoRelay)
built_before=""
for module in "${MODULES[@]}"; do
    object=$OUT/obj/$module.o
    # Rebuilt when its sources change, when a module built before it was rebuilt, or when the debug build
    # (the dependencies' interfaces) changed.
    sources=$(find "$SOURCES/$module" -name '*.swift' | sort)
    if stale "$object" $sources "$DEPENDENCY_STAMP" $built_before "${SWIFTFLAGS[@]}"; then
        echo "fuzz: compiling $module (instrumented)"
        start=$(date +%s)
        $NICE "$SWIFTC" "${SWIFTFLAGS[@]}" -module-name "$module" -wmo \
            -emit-module -emit-module-path "$OUT/Modules/$module.swiftmodule" \
            -c -o "$object" $sources
        done_with "$object"
        echo "fuzz: $module took $(($(date +%s) - start))s"
    fi
    built_before+=" $object"
done

# llhttp with coverage: what NIO's HTTP/1 decoder accepts is what the request targets explore.
LLHTTP_SRC=$ROOT/.build/checkouts/swift-nio/Sources/CNIOLLHTTP
LLHTTP_OBJECTS=()
for source in "$LLHTTP_SRC"/*.c; do
    object=$OUT/obj/llhttp-$(basename "$source" .c).o
    if stale "$object" "$source" "$LLHTTP_SRC"/include/*.h; then
        $NICE "$CLANG" -O2 -g -fPIC -fsanitize=fuzzer-no-link,address -I "$LLHTTP_SRC/include" -c "$source" -o "$object"
        done_with "$object"
    fi
    LLHTTP_OBJECTS+=("$object")
done

# Everything else from the debug build: the test product's objects minus Portico's own, the chat node, the tests and llhttp.
DEPENDENCY_LIST=$OUT/obj/dependencies.txt
grep -v -E '/(Portico[A-Za-z]*|porticoPackage[A-Za-z]*|ChatNode[A-Za-z]*|CNIOLLHTTP)\.build/' "$LINKLIST" >"$DEPENDENCY_LIST"

SUPPORT=$(find "$ROOT/Fuzz/Support" -name '*.swift' 2>/dev/null | sort || true)
for target in "${TARGETS[@]}"; do
    source=$ROOT/Fuzz/Targets/$target.swift
    binary=$OUT/bin/fuzz-$target
    [[ -f $source ]] || { echo "fuzz: no target $target ($source)" >&2; exit 2; }
    if stale "$binary" "$source" $SUPPORT $built_before "${LLHTTP_OBJECTS[@]}" "$DEPENDENCY_STAMP" "$DEPENDENCY_LIST"; then
        echo "fuzz: building $target"
        start=$(date +%s)
        $NICE "$SWIFTC" "${SWIFTFLAGS[@]}" -module-name "Fuzz_${target//-/_}" "$source" $SUPPORT \
            $built_before "${LLHTTP_OBJECTS[@]}" "@$DEPENDENCY_LIST" -lhiredis -use-ld=lld -o "$binary"
        done_with "$binary"
        echo "fuzz: $target took $(($(date +%s) - start))s"
    fi
done

[[ -z ${FUZZ_BUILD_ONLY:-} ]] || exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
# libFuzzer reports crashes itself; Swift's backtracer would hold the log open for up to 30 s per crash.
export SWIFT_BACKTRACE=enable=no
if [[ -n $reproduce ]]; then
    exec "$OUT/bin/fuzz-${TARGETS[0]}" -rss_limit_mb=2048 -timeout=10 "$reproduce"
fi

status=0
summary=()
for target in "${TARGETS[@]}"; do
    work=$OUT/corpus/$target
    log=$OUT/$target.log
    mkdir -p "$work"
    findings=$ROOT/Fuzz/Findings/$target-
    seeds=$ROOT/Fuzz/Corpus/$target
    dict=()
    [[ -f $ROOT/Fuzz/Dictionaries/$target.dict ]] && dict=(-dict="$ROOT/Fuzz/Dictionaries/$target.dict")
    echo "fuzz: running $target for ${SECONDS_PER_TARGET}s"
    set +e
    # New corpus entries go to the first directory ($work); the seeds are only read.
    # FUZZ_ARGS: more libFuzzer flags for every target (-jobs, -max_len, -malloc_limit_mb, …).
    $NICE "$OUT/bin/fuzz-$target" "$work" "$seeds" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$findings" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
    coverage=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    if [[ $rc -ne 0 ]]; then
        status=1
        crash=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1 || true)
        echo "fuzz: $target FOUND A PROBLEM (exit $rc): ${crash:-see $log}"
        grep -E 'Fatal error|FINDING|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY' "$log" | head -5 | sed 's/^/    /' || true
        summary+=("$target: FAILED, ${executions:-?} executions, ${rate:-?}/s, input ${crash:-?}")
    else
        summary+=("$target: ok, ${executions:-?} executions, ${rate:-?}/s, ${coverage:-cov ?}")
    fi
done
echo "fuzz: summary"
printf '    %s\n' "${summary[@]}"
exit $status
