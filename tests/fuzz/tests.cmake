# SPDX-License-Identifier: Apache-2.0
foreach(t segment wal)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c)
    hodei_fuzz_target(fuzz_${t} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c
      ${CMAKE_CURRENT_LIST_DIR}/corpus/${t} hodei_format)
  endif()
endforeach()
# The gRPC request path (framing, protobuf decode, validation) lives in net/.
hodei_fuzz_target(fuzz_request ${CMAKE_CURRENT_LIST_DIR}/fuzz_request.c
  ${CMAKE_CURRENT_LIST_DIR}/corpus/request hodei_net)
