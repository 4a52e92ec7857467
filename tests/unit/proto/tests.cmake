# SPDX-License-Identifier: Apache-2.0
hodei_unit_test(test_proto_audit ${CMAKE_CURRENT_LIST_DIR}/test_audit_proto.c LIBS hodei_proto)
