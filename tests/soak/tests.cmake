# SPDX-License-Identifier: Apache-2.0
add_executable(soak_test ${CMAKE_CURRENT_LIST_DIR}/soak_test.c)
target_link_libraries(soak_test PRIVATE hodei_engine hodei_flags Threads::Threads)
add_test(NAME soak_memory COMMAND soak_test)
set_tests_properties(soak_memory PROPERTIES LABELS slow TIMEOUT 900)
