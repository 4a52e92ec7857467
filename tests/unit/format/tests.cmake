# SPDX-License-Identifier: Apache-2.0
foreach(t event hash record segment)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c)
    hodei_unit_test(test_format_${t} ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c LIBS hodei_format)
  endif()
endforeach()
# The checked-in version-1 segments double as compatibility fixtures.
if(TARGET test_format_segment)
  target_compile_definitions(test_format_segment PRIVATE
    HODEI_SEGMENT_CORPUS_DIR="${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/segment")
endif()
