# SPDX-License-Identifier: Apache-2.0
foreach(t io wal shard search count block_cache recovery fault tamper memory dedup export remote)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c)
    hodei_unit_test(test_engine_${t} ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c LIBS hodei_engine)
  endif()
endforeach()
