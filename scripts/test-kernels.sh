#!/usr/bin/env bash
# Runs the suites on other kernels, each booted in a QEMU virtual machine by scripts/kernel-vm.sh
# (software emulation here: no /dev/kvm). Expects the Release build of scripts/test.sh.
#
#   bash scripts/test-kernels.sh            # the matrix CI runs
#   KERNELS="6.1" bash scripts/test-kernels.sh
#
# The binding and the transport's unit tests run on 6.1, 6.12 and 7.2; the io_uring functional
# suite (which includes the shared suite, compiled for io_uring) on 6.1 and 7.2, and on 7.2 once
# more with the kernel event loop required (less the kernel event loop's own classes, which set
# it themselves and so ran already). The functional
# suite runs one test at a time (-parallel none: measured faster under emulation, and timing
# tests are steadier), with TEST_TIMEOUT_SCALE so waits for prompt events allow for emulation.
# Every leg runs even when an earlier one failed; the exit code says whether any did. Each leg's
# wall time is printed.
set -uo pipefail
cd "$(dirname "$0")/.."
KERNELS=${KERNELS:-"6.1 6.12 7.2"}
FUNCTIONAL_KERNELS=${FUNCTIONAL_KERNELS:-"6.1 7.2"}
KERNEL_LOOP_KERNELS=${KERNEL_LOOP_KERNELS:-"7.2"}
export TEST_TIMEOUT_SCALE=${TEST_TIMEOUT_SCALE:-4}
bin=bin/Release/net10.0
for suite in IoUring.Tests IoUring.Transport.Tests IoUring.FunctionalTests; do
  [ -x "tests/$suite/$bin/$suite" ] || { echo "test-kernels: tests/$suite/$bin/$suite is missing: run scripts/test.sh (or a Release build) first" >&2; exit 2; }
done

failed=()
leg() {
  local kernel=$1 name=$2; shift 2
  local start=$SECONDS
  echo "=== $name on Linux $kernel"
  if bash scripts/kernel-vm.sh --kernel "$kernel" --timeout 1200 -- "$@"; then
    echo "=== $name on Linux $kernel: passed in $((SECONDS - start)) s"
  else
    echo "=== $name on Linux $kernel: FAILED (exit $?) after $((SECONDS - start)) s"
    failed+=("$name on $kernel")
  fi
}

for kernel in $KERNELS; do
  leg "$kernel" "binding and transport unit tests" bash -c \
    "tests/IoUring.Tests/$bin/IoUring.Tests -noColor; r=\$?; tests/IoUring.Transport.Tests/$bin/IoUring.Transport.Tests -noColor || r=\$?; exit \$r"
done
for kernel in $FUNCTIONAL_KERNELS; do
  leg "$kernel" "functional suite (io_uring)" tests/IoUring.FunctionalTests/$bin/IoUring.FunctionalTests -noColor -parallel none
done
# The same suite with every ring's loop in the kernel (IoUringTransportOptions.KernelEventLoop
# Required, through the test transport's IOURING_TEST_KERNEL_EVENT_LOOP), where the kernel has it.
# Without the kernel event loop's own classes: each of their servers sets KernelEventLoop itself,
# so they ran as they would here in the leg above (on the same kernel, when it is in both lists).
for kernel in $KERNEL_LOOP_KERNELS; do
  own=()
  [[ " $FUNCTIONAL_KERNELS " == *" $kernel "* ]] && own=(-class- "IoUring.FunctionalTests.KernelEventLoop*")
  leg "$kernel" "functional suite (io_uring, kernel event loop required)" \
    env IOURING_TEST_KERNEL_EVENT_LOOP=Required tests/IoUring.FunctionalTests/$bin/IoUring.FunctionalTests -noColor -parallel none "${own[@]}"
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'test-kernels: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test-kernels: every leg passed"
