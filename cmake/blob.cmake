# minicriu_blob(NAME SOURCES src... ENTRIES sym...)
#
# Builds a freestanding, position-independent blob from SOURCES, links it as a
# PIE with no dynamic linker, checks with blobtool (libelf) that it carries no
# relocations and no undefined symbols (the build fails otherwise), and emits
# blobs/NAME_blob.h: the flat bytes and the offsets of ENTRIES.
set(MINICRIU_BLOB_CFLAGS
  -std=c++20 -O2 -ffreestanding -nostdlib -fPIE -fno-stack-protector -fno-exceptions
  -fno-rtti -fno-asynchronous-unwind-tables -fno-unwind-tables -mgeneral-regs-only
  -fno-builtin -fno-jump-tables -fvisibility=hidden -fcf-protection=none
  -fno-threadsafe-statics -Wall -Wextra)

function(minicriu_blob NAME)
  cmake_parse_arguments(B "" "" "SOURCES;ENTRIES" ${ARGN})
  set(objs)
  foreach(src ${B_SOURCES})
    get_filename_component(base ${src} NAME_WE)
    set(obj ${CMAKE_CURRENT_BINARY_DIR}/blobs/${NAME}_${base}.o)
    add_custom_command(OUTPUT ${obj}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/blobs
      COMMAND ${CMAKE_CXX_COMPILER} ${MINICRIU_BLOB_CFLAGS}
              -I${CMAKE_CURRENT_SOURCE_DIR}/src -c ${CMAKE_CURRENT_SOURCE_DIR}/${src} -o ${obj}
      DEPENDS ${src}
      IMPLICIT_DEPENDS CXX ${CMAKE_CURRENT_SOURCE_DIR}/${src}
      COMMENT "Compiling freestanding blob ${NAME}: ${src}")
    list(APPEND objs ${obj})
  endforeach()
  set(elf ${CMAKE_CURRENT_BINARY_DIR}/blobs/${NAME}.elf)
  set(hdr ${CMAKE_CURRENT_BINARY_DIR}/blobs/${NAME}_blob.h)
  add_custom_command(OUTPUT ${elf}
    COMMAND ${CMAKE_CXX_COMPILER} -nostdlib -static-pie -Wl,--no-dynamic-linker
            -Wl,-T,${CMAKE_CURRENT_SOURCE_DIR}/cmake/blob.lds -Wl,-z,noexecstack
            -Wl,--build-id=none -Wl,--no-warn-rwx-segments ${objs} -o ${elf}
    DEPENDS ${objs} ${CMAKE_CURRENT_SOURCE_DIR}/cmake/blob.lds
    COMMENT "Linking blob ${NAME}")
  add_custom_command(OUTPUT ${hdr}
    COMMAND blobtool ${elf} ${NAME} ${hdr} ${B_ENTRIES}
    DEPENDS ${elf} blobtool
    COMMENT "Checking blob ${NAME} for relocations and embedding it")
  add_custom_target(${NAME}_blob DEPENDS ${hdr})
endfunction()
