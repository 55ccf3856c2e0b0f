#!/usr/bin/env bash
# blob_check_test.sh CXX LINKER_SCRIPT BLOBTOOL SRC_DIR WORK_DIR
# The blob build refuses a blob with relocations and accepts one without.
set -u
cxx=$1 lds=$2 blobtool=$3 src=$4 work=$5
mkdir -p "$work"
flags=(-std=c++20 -O2 -ffreestanding -nostdlib -fPIE -fno-stack-protector -fno-exceptions
       -fno-rtti -fno-asynchronous-unwind-tables -mgeneral-regs-only)
build() {  # name entry
  "$cxx" "${flags[@]}" -c "$src/$1.cc" -o "$work/$1.o" &&
  "$cxx" -nostdlib -static-pie -Wl,--no-dynamic-linker -Wl,-T,"$lds" -Wl,--no-warn-rwx-segments -Wl,--build-id=none \
    "$work/$1.o" -o "$work/$1.elf" &&
  "$blobtool" "$work/$1.elf" "$1" "$work/$1.h" "$2"
}
if ! build good_blob good_entry; then echo "FAIL: a blob without relocations was refused"; exit 1; fi
out=$(build bad_blob bad_entry 2>&1)
if [ $? -eq 0 ]; then echo "FAIL: a blob with a relocation was accepted"; exit 1; fi
if ! grep -q "relocation" <<<"$out"; then echo "FAIL: refusal does not name the relocation: $out"; exit 1; fi
echo "ok: $out"
