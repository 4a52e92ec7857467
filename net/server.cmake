# SPDX-License-Identifier: Apache-2.0
# The gRPC server side of net/ (see net/CMakeLists.txt).
target_sources(hodei_net PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/grpc_status.c
  ${CMAKE_CURRENT_LIST_DIR}/grpc_frame.c
  ${CMAKE_CURRENT_LIST_DIR}/pb_arena.c
  ${CMAKE_CURRENT_LIST_DIR}/log.c
  ${CMAKE_CURRENT_LIST_DIR}/units.c
  ${CMAKE_CURRENT_LIST_DIR}/json_check.c
  ${CMAKE_CURRENT_LIST_DIR}/auth.c
  ${CMAKE_CURRENT_LIST_DIR}/conn.c
  ${CMAKE_CURRENT_LIST_DIR}/decode.c
  ${CMAKE_CURRENT_LIST_DIR}/rpc.c
  ${CMAKE_CURRENT_LIST_DIR}/server.c
  ${CMAKE_CURRENT_LIST_DIR}/exporter.c
  ${CMAKE_CURRENT_LIST_DIR}/targets.c)
