# SPDX-License-Identifier: Apache-2.0
# Unit test of the ClickHouse mirror client (net/clickhouse.c) without a
# server: RowBinary rows, SQL text, error parsing, configuration, the lock,
# damaged segments refused before any request. The exchange with a real
# ClickHouse 18.16 is tests/integration/test_clickhouse_mirror.py.
hodei_unit_test(test_net_clickhouse ${CMAKE_CURRENT_LIST_DIR}/test_clickhouse.c LIBS hodei_net)
