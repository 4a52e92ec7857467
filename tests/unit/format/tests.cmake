# SPDX-License-Identifier: Apache-2.0
foreach(t event hash record segment)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c)
    hodei_unit_test(test_format_${t} ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c LIBS hodei_format)
  endif()
endforeach()
