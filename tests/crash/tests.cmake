# SPDX-License-Identifier: Apache-2.0
#
# Crash test: crash_test (plain C, its own main) forks crash_driver, kills
# it with SIGKILL at random points under load, and checks after every round
# that every acknowledged event is stored exactly once and the chains
# verify. HODEI_CRASH_ROUNDS and HODEI_CRASH_SEED override the defaults.
add_executable(crash_driver ${CMAKE_CURRENT_LIST_DIR}/crash_driver.c)
target_link_libraries(crash_driver PRIVATE hodei_engine hodei_flags)
target_include_directories(crash_driver PRIVATE ${PROJECT_SOURCE_DIR})

add_executable(crash_test ${CMAKE_CURRENT_LIST_DIR}/crash_test.c)
target_link_libraries(crash_test PRIVATE hodei_engine hodei_flags)
target_include_directories(crash_test PRIVATE ${PROJECT_SOURCE_DIR})

add_test(NAME crash COMMAND crash_test $<TARGET_FILE:crash_driver>)
set_tests_properties(crash PROPERTIES LABELS crash TIMEOUT 1200
  ENVIRONMENT "HODEI_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")

# The same program, short and with frequent seals, for the TSan pass
# (scripts/test.sh tsan runs the label tsan: plain programs with their own
# main(), since Criterion cannot start under TSan).
add_test(NAME crash_smoke COMMAND crash_test $<TARGET_FILE:crash_driver>)
set_tests_properties(crash_smoke PROPERTIES LABELS tsan TIMEOUT 600
  ENVIRONMENT "HODEI_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp;HODEI_CRASH_ROUNDS=10;HODEI_CRASH_SEAL_ROWS=300")
