# SPDX-License-Identifier: Apache-2.0
# The client side of net/ (see net/CMakeLists.txt): the JSON form of events
# and the blocking gRPC client that hodei-audit and the benchmarks use.
target_sources(hodei_net PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/event_json.c
  ${CMAKE_CURRENT_LIST_DIR}/grpc_client.c)
# The version in the user-agent header (hodei-audit/<version>).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/grpc_client.c PROPERTIES
  COMPILE_DEFINITIONS HODEI_VERSION="${PROJECT_VERSION}")
