# How `sam build` turns a function crate into the `bootstrap` executable of a provided.al2023
# Lambda. Each functions/<crate>/Makefile sets CRATE, includes this file and maps its template
# target (`build-<LogicalId>`, BuildMethod: makefile) to `bootstrap`. samconfig.toml builds in
# source (build_in_source), so ../../shared and the workspace are where cargo expects them.
#
#   LAMBDA_ARCH       arm64 (default, like the template's Architecture parameter) or x86_64.
#                     Must match the Architecture you deploy with. arm64 on an x86_64 machine
#                     cross-compiles: `scripts/deps.sh deploy` installs the Rust target and
#                     Debian's gcc-aarch64-linux-gnu.
#   CARGO_TARGET_DIR  default ~/.cache/mender-rs/target, as for `make run` / `make test`.
#
# Every make invocation builds all Lambda function crates in one cargo call: with `parallel = true`
# the first one builds them while the others wait on cargo's lock and then find them fresh
# (same package set, so the same feature unification and fingerprints).

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
LAMBDA_ARCH ?= arm64
CARGO_TARGET_DIR ?= $(HOME)/.cache/mender-rs/target
export CARGO_TARGET_DIR
# the Lambda function crates: those with a Makefile (not the deviceconnect container)
FUNCTIONS := $(sort $(notdir $(patsubst %/Makefile,%,$(wildcard $(ROOT)/functions/*/Makefile))))

ifeq ($(LAMBDA_ARCH),arm64)
  TARGET := aarch64-unknown-linux-gnu
  ifneq ($(shell uname -m),aarch64)
    LINKER := aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER ?= $(LINKER)
    export CC_aarch64_unknown_linux_gnu ?= $(LINKER)
    export AR_aarch64_unknown_linux_gnu ?= aarch64-linux-gnu-ar
  endif
else ifeq ($(LAMBDA_ARCH),x86_64)
  TARGET := x86_64-unknown-linux-gnu
  ifneq ($(shell uname -m),x86_64)
    LINKER := x86_64-linux-gnu-gcc
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER ?= $(LINKER)
    export CC_x86_64_unknown_linux_gnu ?= $(LINKER)
    export AR_x86_64_unknown_linux_gnu ?= x86_64-linux-gnu-ar
  endif
else
  $(error LAMBDA_ARCH must be arm64 or x86_64, not "$(LAMBDA_ARCH)")
endif

.PHONY: bootstrap
bootstrap:
	@test -n "$(CRATE)" || { echo "CRATE is not set" >&2; exit 1; }
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run this through sam build" >&2; exit 1; }
	@test -z "$(LINKER)" || command -v $(LINKER) >/dev/null || { echo "$(LINKER) missing: run scripts/deps.sh deploy (or build with LAMBDA_ARCH=$(shell uname -m | sed s/aarch64/arm64/))" >&2; exit 1; }
	cd $(ROOT) && cargo build --release --target $(TARGET) $(addprefix -p ,$(FUNCTIONS))
	cp $(CARGO_TARGET_DIR)/$(TARGET)/release/$(CRATE) $(ARTIFACTS_DIR)/bootstrap
