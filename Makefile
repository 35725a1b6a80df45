# vipr: `make demo` and `make test` install what is missing, build, then run.
SHELL := /bin/bash
CLANG ?= clang-16
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
	-I bpf/include -I /usr/include/$(shell uname -m)-linux-gnu
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(BPF_SRC:.c=.o)
BPF_HDR := $(wildcard bpf/include/*.h bpf/lib/*.h)
# Test-only objects: the TC datapath with the previous map layout (one conntrack LRU,
# vipr_conntrack_v1), which test/e2e/upgrade.test.ts runs an agent of and upgrades.
BPF_TEST_OBJ := dist/bpf-test/tc_lb_previous.bpf.o
TS_SRC := $(shell find src -name '*.ts')
APT_PKGS := clang-16 llvm-16 libbpf1 libbpf-dev bpftool iproute2 iptables nftables ipset ipvsadm \
	ethtool curl socat util-linux kmod shellcheck vagrant gcc libc6-dev
# Only for the VM lab (make lab-vm): an image from Debian packages, booted with qemu.
VM_APT_PKGS := debootstrap qemu-system-x86 e2fsprogs

.PHONY: all deps apt-deps npm-deps build bpf ts bench-bin demo test clean lab-vm lab-vm-deps lab-vm-test

all: build

deps: apt-deps npm-deps

# Installs only what is missing: apt is not touched when every package is present.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

apt-deps:
	$(call apt_install,$(APT_PKGS))

lab-vm-deps:
	$(call apt_install,$(VM_APT_PKGS))

npm-deps: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@node -e "import('koffi').then(k => k.default.load('libbpf.so.1'))" --input-type=module \
		|| { echo 'koffi cannot load libbpf.so.1: is libbpf1 installed?'; exit 1; }
	@touch $@

BENCH_BIN := bench/bin/rr bench/bin/responder bench/bin/xdp_paths.bpf.o
BENCH_BIN += bench/bin/xdp-flood bench/bin/xdp_flood.bpf.o bench/bin/xdp_sink.bpf.o

build: bpf ts bench-bin

bpf: $(BPF_OBJ) $(BPF_TEST_OBJ)

# vipr bench's load generator and responder (C, pinned to a core while measuring).
bench-bin: $(BENCH_BIN)

bench/bin/%: bench/%.c
	@mkdir -p bench/bin
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

# The north-south bench's generator (BPF_PROG_TEST_RUN with live frames: libbpf) and the XDP
# programs it and the backends' sink load.
bench/bin/xdp-flood: bench/xdp-flood.c bench/xdp_flood.h
	@mkdir -p bench/bin
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $< -lbpf

bench/bin/%.bpf.o: bench/%.bpf.c bench/xdp_flood.h
	@mkdir -p bench/bin
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The north-south bench's harness for timing the XDP program's paths (it inlines lib/xdp.h).
bench/bin/xdp_paths.bpf.o: bench/xdp_paths.bpf.c $(BPF_HDR)
	@mkdir -p bench/bin
	$(CLANG) $(BPF_CFLAGS) -I bpf -c $< -o $@

bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDR)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

dist/bpf-test/tc_lb_previous.bpf.o: bpf/tc_lb.bpf.c $(BPF_HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -DVIPR_LAYOUT_PREVIOUS -c $< -o $@

ts: dist/.built

dist/.built: $(TS_SRC) tsconfig.json node_modules/.package-lock.json
	npx tsc -p tsconfig.json
	@chmod +x dist/src/cli/main.js
	@touch $@

demo: deps build
	./scripts/demo.sh

# ts-jest transpiles test files one by one (isolatedModules): the tests are type-checked here.
test: deps build
	npx tsc -p tsconfig.test.json
	node --experimental-vm-modules node_modules/jest/bin/jest.js --runInBand

# Every mode, IPVS included, measured in a qemu VM with Debian's kernel under TCG with instruction
# counting (guest time follows instructions, not the host's load), then each mode's ratio to
# `direct` beside the same ratio from `vipr bench` on this machine: the calibration table, whose
# largest disagreement is the error bar on IPVS (an hour and more; LAB_VM_ARGS=--quick: minutes).
lab-vm: deps build lab-vm-deps
	node dist/src/cli/main.js lab vm $(LAB_VM_ARGS)

# A --quick VM run (1 Service, 2 rounds, short windows) and its calibration table.
lab-vm-test: deps build lab-vm-deps
	VIPR_JEST_VM=1 node --experimental-vm-modules node_modules/jest/bin/jest.js --runInBand test/vm

clean:
	rm -rf dist bpf/*.o bench/bin
