# SPDX-License-Identifier: Apache-2.0
# The operator CLI, run as a user would: make_data writes a data directory
# through the engine, test_cli.sh drives hodei-audit on it.
add_executable(hodei_make_data ${CMAKE_CURRENT_LIST_DIR}/make_data.c)
target_link_libraries(hodei_make_data PRIVATE hodei_engine hodei_flags)
target_include_directories(hodei_make_data PRIVATE ${PROJECT_SOURCE_DIR})

add_test(NAME test_tools_cli
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/test_cli.sh
          $<TARGET_FILE:hodei-audit> $<TARGET_FILE:hodei_make_data>)
set_tests_properties(test_tools_cli PROPERTIES LABELS "unit" TIMEOUT 120 SKIP_RETURN_CODE 77
  ENVIRONMENT "HODEI_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")
