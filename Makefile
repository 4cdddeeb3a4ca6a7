# cohort build. `make` builds build/cohort; `make run` and `make test` first
# install what is missing through scripts/deps.sh (the one place that names
# dependencies). SANITIZE=address,undefined builds into build/san/ instead.

CC       ?= cc
PKGS     := libuv hiredis jansson sqlite3 openssl libpq zlib libbrotlienc libbrotlidec libzstd libnghttp2 libcrypt
SANITIZE ?=
FUZZ_SECONDS ?= 60
# Debian's python3, which has python3-pytest (a python3 earlier in PATH may not).
PYTHON   ?= /usr/bin/python3

ifeq ($(SANITIZE),)
BUILD    := build
OPT      := -O2
else
BUILD    := build/san
OPT      := -O1 -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wformat=2 -Wno-format-nonliteral
CFLAGS   += -std=gnu11 $(OPT) -g $(WARN) -D_GNU_SOURCE -Isrc $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDFLAGS  += $(if $(SANITIZE),-fsanitize=$(SANITIZE))

SRC      := $(sort $(wildcard src/*.c src/*/*.c))
OBJ      := $(SRC:%.c=$(BUILD)/obj/%.o)
LIBOBJ   := $(filter-out $(BUILD)/obj/src/main.o,$(OBJ))
UNIT     := $(sort $(wildcard tests/unit/test_*.c))
UNITBIN  := $(UNIT:tests/unit/%.c=$(BUILD)/tests/%)
VERSION  := $(shell cat VERSION)

.PHONY: all run test unit e2e soak fuzz fuzz-build deps deps-test clean bench check-docs check-layers fresh
all: $(BUILD)/cohort

$(BUILD)/cohort: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: %.c Makefile VERSION
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DCOHORT_VERSION='"$(VERSION)"' -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(LIBOBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS) -lcriterion

-include $(OBJ:.o=.d)

# Observability (app/stats.c): the dashboard page is embedded by the
# assembler's .incbin, so the object depends on it. build/cohort-test is the
# same binary with test-only routes (-DCOHORT_TEST_ROUTES: /__test/block,
# leak, fail, sleep),
# for the e2e tests that need them; build/cohort never has them.
$(BUILD)/obj/src/app/dashboard.o: src/app/dashboard.html
TEST_ROUTE_SRC := src/app/stats.c src/app/testroutes.c
TEST_ROUTE_OBJ := $(TEST_ROUTE_SRC:%.c=$(BUILD)/obj-test/%.o)
$(BUILD)/obj-test/%.o: %.c Makefile VERSION
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DCOHORT_VERSION='"$(VERSION)"' -DCOHORT_TEST_ROUTES -MMD -MP -c -o $@ $<
$(BUILD)/cohort-test: $(filter-out $(TEST_ROUTE_SRC:%.c=$(BUILD)/obj/%.o),$(OBJ)) $(TEST_ROUTE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
-include $(TEST_ROUTE_OBJ:.o=.d)

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory all
	./$(BUILD)/cohort serve

# A sanitizer report fails the run even when Criterion counted the test as
# passed (LeakSanitizer reports as the test's process exits).
unit: $(UNITBIN)
	@set -e; for t in $(UNITBIN); do echo "== $$t"; \
	  ./$$t --jobs 2 > $$t.out 2>&1 || { cat $$t.out; exit 1; }; cat $$t.out; \
	  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: [A-Za-z]+Sanitizer' $$t.out; then \
	    echo "$$t: sanitizer report above" >&2; exit 1; fi; done

e2e: $(BUILD)/cohort $(BUILD)/cohort-test
	COHORT_BIN=$(abspath $(BUILD)/cohort) COHORT_TEST_BIN=$(abspath $(BUILD)/cohort-test) $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

# The soak (tests/soak): faults at random moments under load for SOAK_SECONDS
# (default 240; the whole run stays under 10 minutes), seeded by SOAK_SEED (the
# time when unset; printed, to replay a run). Not part of `make test`.
SOAK_SECONDS ?= 240
soak: $(BUILD)/cohort $(BUILD)/cohort-test
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) COHORT_BIN=$(abspath $(BUILD)/cohort) \
	  COHORT_TEST_BIN=$(abspath $(BUILD)/cohort-test) $(PYTHON) -m pytest -q -s -p no:cacheprovider tests/soak

# libFuzzer targets, always built with clang, ASan and UBSan.
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -D_GNU_SOURCE -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
build/fuzz/%: fuzz/fuzz_%.c src/http/parser.c src/http/parser.h
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_$*.c src/http/parser.c

# The config loader's target links every source but main.c: the loader calls
# into the modules it registers, and they into the rest.
FUZZ_CONFIG_SRC := $(filter-out src/main.c,$(SRC))
build/fuzz/config: fuzz/fuzz_config.c $(FUZZ_CONFIG_SRC) $(wildcard src/*.h src/*/*.h) src/app/dashboard.html VERSION
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -DCOHORT_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
	  -o $@ fuzz/fuzz_config.c $(FUZZ_CONFIG_SRC) $(LDLIBS)

fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/%)

# Replays every kept regression, then fuzzes each target for FUZZ_SECONDS;
# fails when a target crashes, printing the input (scripts/fuzz.sh).
fuzz: fuzz-build
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The include graph of src/ follows the layer order (lower layers first) and
# has no cycle between modules; see scripts/check-layers.py.
check-layers:
	@$(PYTHON) scripts/check-layers.py src

test: deps-test
	@$(MAKE) --no-print-directory all check-layers unit e2e
	@$(MAKE) --no-print-directory fuzz SANITIZE=

# The README's two commands (make run, then make test) in a throwaway Debian 12
# root that has only gcc, make and git (scripts/fresh.sh). Needs root; not part
# of make test.
fresh:
	@scripts/deps.sh fresh
	@scripts/fresh.sh

bench: all
	@scripts/deps.sh bench
	bench/run-hello.sh

clean:
	rm -rf build
