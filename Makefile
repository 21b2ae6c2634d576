# kiln — one GNU Makefile. Object lists are spelled out on purpose.
PKGS        = lmdb libczmq libzmq msgpack openssl libarchive libcurl jansson zlib libzstd
PREFIX     ?= /usr/local
CC         ?= cc
CFLAGS     ?= -O2 -g
KILN_CFLAGS = -std=gnu17 -D_GNU_SOURCE -Ishared -Icoordinator -Iworker -Icli -Idrivers -Wall -Wextra -Wshadow \
              -Wmissing-prototypes -Wstrict-prototypes -Wvla -Wformat=2 \
              -Wno-format-nonliteral -Werror \
              $(shell pkg-config --cflags $(PKGS))
LIBS        = $(shell pkg-config --libs $(PKGS)) -lpthread
ifdef SAN
CFLAGS     += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
LDSAN       = -fsanitize=address,undefined
endif

SHARED_OBJ = shared/err.o shared/log.o shared/util.o shared/digest.o shared/cas.o \
             shared/platform.o shared/proto.o shared/xfer.o shared/oci.o shared/layer.o \
             shared/curve.o shared/op.o shared/gostr.o shared/ignore.o \
             shared/registry.o shared/registry-http.o shared/registry-ref.o shared/resources.o
FRONT_OBJ  = coordinator/dockerfile.o coordinator/shell.o coordinator/plan.o \
             coordinator/plan-copy.o coordinator/plan-instr.o coordinator/plan-result.o \
             coordinator/plan-dump.o coordinator/instructions.o \
             coordinator/outline.o coordinator/outline-source.o coordinator/outline-json.o
COORD_OBJ  = coordinator/main.o coordinator/nodes.o coordinator/build.o coordinator/build-solve.o \
             coordinator/build-export.o coordinator/build-request.o coordinator/solver.o \
             coordinator/cache.o $(FRONT_OBJ)
WORKER_OBJ = worker/main.o worker/job.o worker/job-run.o worker/job-copy.o worker/snapshot.o worker/export.o worker/qemu.o \
             worker/confine.o worker/peer.o worker/peer-fetch.o worker/sshfwd.o
RUN_OBJ    = worker/kiln-run.o
CLI_OBJ    = cli/main.o cli/usage.o cli/config.o cli/builder.o cli/build.o cli/context.o cli/conn.o cli/progress.o cli/secret.o \
             cli/ssh.o cli/imagetools.o cli/imagetools-inspect.o \
             cli/debug.o coordinator/dockerfile.o coordinator/shell.o \
             drivers/driver.o drivers/local.o drivers/remote.o

BINS = bin/kiln bin/kiln-coordinator bin/kiln-worker bin/kiln-run

UNIT_TESTS = tests/unit/digest_test tests/unit/cas_test tests/unit/platform_test \
             tests/unit/proto_test tests/unit/xfer_test tests/unit/oci_test \
             tests/unit/layer_test tests/unit/dockerfile_test tests/unit/shell_test \
             tests/unit/plan_test tests/unit/op_test tests/unit/ignore_test tests/unit/config_test tests/unit/conn_test \
             tests/unit/registry_test tests/unit/outline_test tests/unit/context_test \
             tests/unit/debug_test tests/unit/secret_test tests/unit/resources_test \
             tests/unit/nodes_test tests/unit/peer_test tests/unit/ssh_test tests/unit/solver_test
CONFORMANCE = tests/conformance/corpus_test tests/conformance/golden_test
FUZZ_REPLAY = tests/fuzz/fuzz_proto tests/fuzz/fuzz_dockerfile

ALL_OBJ = $(SHARED_OBJ) $(COORD_OBJ) $(WORKER_OBJ) $(RUN_OBJ) $(CLI_OBJ)

all: $(BINS)

# Objects depend on the flags they were built with, so `make test SAN=1`
# after a plain build (or the reverse) rebuilds everything.
FLAGS_STAMP = .build-flags
FLAGS_NOW := $(CC) $(KILN_CFLAGS) $(CFLAGS) $(LDSAN)
$(FLAGS_STAMP): FORCE
	@printf '%s\n' '$(FLAGS_NOW)' | cmp -s - $@ || printf '%s\n' '$(FLAGS_NOW)' > $@
FORCE:

%.o: %.c $(FLAGS_STAMP)
	$(CC) $(KILN_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

bin/kiln: $(CLI_OBJ) $(SHARED_OBJ)
	@mkdir -p bin
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)
bin/kiln-coordinator: $(COORD_OBJ) $(SHARED_OBJ)
	@mkdir -p bin
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)
bin/kiln-worker: $(WORKER_OBJ) $(SHARED_OBJ)
	@mkdir -p bin
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)
bin/kiln-run: $(RUN_OBJ) $(SHARED_OBJ)
	@mkdir -p bin
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)

tests/unit/%_test: tests/unit/%_test.o $(SHARED_OBJ) $(FRONT_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/config_test: tests/unit/config_test.o cli/config.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/nodes_test: tests/unit/nodes_test.o coordinator/nodes.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/solver_test: tests/unit/solver_test.o coordinator/solver.o coordinator/cache.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/conn_test: tests/unit/conn_test.o cli/conn.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/context_test: tests/unit/context_test.o cli/context.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/secret_test: tests/unit/secret_test.o cli/secret.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/peer_test: tests/unit/peer_test.o worker/peer.o worker/peer-fetch.o $(SHARED_OBJ)
tests/unit/ssh_test: tests/unit/ssh_test.o cli/ssh.o $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/unit/debug_test: tests/unit/debug_test.o cli/debug.o coordinator/dockerfile.o coordinator/shell.o \
                       $(SHARED_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka
tests/conformance/corpus_test: tests/conformance/corpus_test.o $(SHARED_OBJ) $(FRONT_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)
tests/conformance/golden_test: tests/conformance/golden_test.o $(SHARED_OBJ) $(FRONT_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)
tests/fuzz/fuzz_%: tests/fuzz/fuzz_%.o tests/fuzz/replay.o $(SHARED_OBJ) $(FRONT_OBJ)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(LIBS)

# Build the fuzzers with clang's libFuzzer (and ASan/UBSan).
FUZZ_CFLAGS = -std=gnu17 -D_GNU_SOURCE -Ishared -g -O1 -fsanitize=fuzzer,address,undefined \
              $(shell pkg-config --cflags $(PKGS))
fuzz:
	@mkdir -p bin/fuzz
	for f in proto dockerfile; do \
	  clang $(FUZZ_CFLAGS) -o bin/fuzz/fuzz_$$f tests/fuzz/fuzz_$$f.c \
	    $(SHARED_OBJ:.o=.c) $(FRONT_OBJ:.o=.c) $(LIBS) || exit 1; \
	done
	@echo "run: bin/fuzz/fuzz_proto tests/fuzz/corpus/proto (likewise dockerfile)"

deps:
	tests/install-deps.sh

test: deps $(BINS) $(UNIT_TESTS) $(CONFORMANCE) $(FUZZ_REPLAY)
	tests/run-tests.sh

# The differential test against Docker 20.10's BuildKit and buildah (needs
# root; installs docker.io and buildah; ~2 minutes): not part of `make test`.
test-diff: all
	tests/differential/run.sh

# A worker SIGKILLed in the middle of a step, ROUNDS times (default 20):
# every build must still succeed with the undisturbed image digest.
test-faults: deps $(BINS)
	tests/faults/kill-worker.sh

# The benchmark (root; kiln on one and on two nodes against buildah, cold,
# cached and after a change; about 4 minutes on 2 cores; BENCH_RUNS=3 for
# medians of three; fails when a build failed): not part of `make test`.
bench: all
	bench/run.sh

demo: deps $(BINS)
	tests/demo.sh

install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin

clean:
	rm -rf bin $(FLAGS_STAMP) $(ALL_OBJ) $(ALL_OBJ:.o=.d) $(UNIT_TESTS) tests/unit/*.o tests/unit/*.d \
	  $(CONFORMANCE) tests/conformance/*.o tests/conformance/*.d $(FUZZ_REPLAY) tests/fuzz/*.o tests/fuzz/*.d


.PHONY: all deps test test-diff test-faults bench demo install clean fuzz FORCE
.SECONDARY:
-include $(ALL_OBJ:.o=.d) $(wildcard tests/*/*.d)
