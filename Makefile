# Portico — the two commands are `make demo` and `make test`.
SWIFT ?= swift
.DEFAULT_GOAL := help

.PHONY: help deps build test examples tsan asan lint format demo e2e bench fuzz clean

help:
	@echo "make demo   install what is missing, build, start Redis + 3 chat nodes + portico, print the URLs"
	@echo "make test   install what is missing, lint, run every test"
	@echo "make build  release build of portico (.build/release/portico)"
	@echo "make e2e    a real-browser test of the demo (headless Chromium)"
	@echo "make examples  Examples/hummingbird-chat: build it and run its test next to portico-chat and Redis"
	@echo "make tsan   ThreadSanitizer over the tests that cross threads (SANITIZER_TESTS), in .build-tsan"
	@echo "make asan   AddressSanitizer over the same tests, in .build-asan (SANITIZER_TESTS=. for every test)"
	@echo "make fuzz   libFuzzer targets (Fuzz/), FUZZ_SECONDS each (default 60); findings go to Fuzz/Findings"
	@echo "make bench  side-by-side benchmark with HAProxy, nginx and Caddy, fan-out and relay (loopback, about 20 minutes)"

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build -c release --product portico
	$(SWIFT) build -c release --product portico-chat
	$(SWIFT) build -c release --product portico-testbackend

FORMATTED := Package.swift Sources Tests Fuzz Examples/hummingbird-chat/Package.swift \
	Examples/hummingbird-chat/Sources Examples/hummingbird-chat/Tests

lint:
	$(SWIFT) format lint --recursive --strict $(FORMATTED)

format:
	$(SWIFT) format format --in-place --recursive $(FORMATTED)

test: deps lint
	$(SWIFT) build --build-tests
	# Serial: the timing tests (timeouts, idle closes) must not share two cores with the 1 GiB streams.
	$(SWIFT) test --no-parallel
	scripts/cli-tests.sh .build/debug/portico

# The Hummingbird example is its own package (the main build never compiles Hummingbird); its test runs a
# portico-chat (this package's debug build) and the example's node in one room over a private Redis.
examples: deps
	$(SWIFT) build --product portico-chat
	cd Examples/hummingbird-chat && $(SWIFT) build --build-tests && $(SWIFT) test --skip-build

# The tests whose work crosses threads and event loops: the relay (Redis, fan-out across loops), the RESP
# client, the chat node, and the proxy end to end. A regular expression over test names; `.` runs them all.
SANITIZER_TESTS ?= PorticoRelayTests|PorticoRESPTests|ChatNodeTests|PorticoProxyTests
# Suppressions, each with its reason, in scripts/tsan.supp.
tsan: deps
	$(SWIFT) build --build-tests --sanitize=thread --build-path .build-tsan
	@# Reports go to files, so that those of the programs the tests start (portico, portico-chat) are seen too.
	rm -rf .build-tsan/reports && mkdir -p .build-tsan/reports
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$(CURDIR)/.build-tsan/reports/tsan \
		suppressions=$(CURDIR)/scripts/tsan.supp" \
		$(SWIFT) test --skip-build --sanitize=thread --build-path .build-tsan --no-parallel \
		--filter '$(SANITIZER_TESTS)'; status=$$?; \
		if ls .build-tsan/reports/tsan.* >/dev/null 2>&1; then cat .build-tsan/reports/tsan.*; exit 1; fi; \
		exit $$status

# Leak detection off: SwiftNIO's singleton event loops and the runtime's metadata live until exit by design.
asan: deps
	$(SWIFT) build --build-tests --sanitize=address --build-path .build-asan
	ASAN_OPTIONS="detect_leaks=0" \
		$(SWIFT) test --skip-build --sanitize=address --build-path .build-asan --no-parallel --filter '$(SANITIZER_TESTS)'

demo: build
	@scripts/demo.sh

# A real browser (headless Chromium + Selenium) against the demo topology, then the same topology spread
# over network namespaces (skipped, with the reason, where they cannot be made).
e2e: build
	@scripts/install-deps.sh chromium chromium-driver python3-pip
	@python3 -c "import selenium" 2>/dev/null || python3 -m pip install --quiet selenium \
		|| python3 -m pip install --quiet --break-system-packages selenium
	python3 e2e/browser_test.py
	e2e/multihost_test.sh

# Side by side with HAProxy, nginx and Caddy (installs them), interleaved rounds (scripts/bench.sh), then
# chat fan-out through the balancer (scripts/bench_fanout.sh), the relay next to redis-benchmark
# (scripts/bench_relay.sh) and portico-chat next to python-socketio (scripts/bench_anchor.sh; pip installs
# python-socketio). Results and the chart go to bench/.
bench: build
	@scripts/install-deps.sh haproxy nginx caddy wrk hey redis-server redis-tools
	@python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install --quiet matplotlib \
		|| python3 -m pip install --quiet --break-system-packages matplotlib \
		|| scripts/install-deps.sh python3-matplotlib
	$(SWIFT) build -c release --product portico-bench
	scripts/bench.sh 3 5
	scripts/bench_fanout.sh 10 20 5
	scripts/bench_relay.sh 100000
	scripts/bench_anchor.sh 20 5

# Fuzz targets (Fuzz/Targets) built by scripts/fuzz.sh against the debug build's objects; each runs FUZZ_SECONDS.
fuzz: deps
	$(SWIFT) build --build-tests
	scripts/fuzz.sh

clean:
	rm -rf .build run
