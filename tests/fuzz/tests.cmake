# SPDX-License-Identifier: Apache-2.0
foreach(t segment wal)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c)
    hodei_fuzz_target(fuzz_${t} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c
      ${CMAKE_CURRENT_LIST_DIR}/corpus/${t} hodei_format)
  endif()
endforeach()
