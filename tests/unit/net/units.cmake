# SPDX-License-Identifier: Apache-2.0
hodei_unit_test(test_net_units ${CMAKE_CURRENT_LIST_DIR}/test_units.c LIBS hodei_net)
hodei_unit_test(test_net_json_check ${CMAKE_CURRENT_LIST_DIR}/test_json_check.c LIBS hodei_net)
