# SPDX-License-Identifier: Apache-2.0
hodei_unit_test(test_bench_gen ${CMAKE_CURRENT_LIST_DIR}/test_gen.c LIBS hodei_bench_gen)
