# SPDX-License-Identifier: Apache-2.0
# Unit tests of net/metrics.c and net/admin.c. The admin test talks real
# HTTP to 127.0.0.1 (libcurl); both pipe expositions through
# `promtool check metrics` and skip that check when promtool is missing.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
hodei_unit_test(test_net_metrics ${CMAKE_CURRENT_LIST_DIR}/test_metrics.c LIBS hodei_net)
hodei_unit_test(test_net_admin ${CMAKE_CURRENT_LIST_DIR}/test_admin.c
  LIBS hodei_net PkgConfig::CURL)

# The same code under concurrency, as a plain program: label tsan too, since
# Criterion cannot start under TSan (scripts/test.sh runs the label tsan).
add_executable(threads_net_metrics ${CMAKE_CURRENT_LIST_DIR}/threads_metrics.c)
target_link_libraries(threads_net_metrics PRIVATE hodei_net hodei_flags)
target_include_directories(threads_net_metrics PRIVATE ${PROJECT_SOURCE_DIR})
add_test(NAME threads_net_metrics COMMAND threads_net_metrics)
set_tests_properties(threads_net_metrics PROPERTIES LABELS "unit;tsan" TIMEOUT 300)

# The export workers (net/exporter.c) with a real engine and a folder as
# their target.
hodei_unit_test(test_net_exporter ${CMAKE_CURRENT_LIST_DIR}/test_exporter.c LIBS hodei_net)
