# SPDX-License-Identifier: Apache-2.0
# The gRPC server side of net/ (see net/CMakeLists.txt).
target_sources(hodei_net PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/grpc_status.c)
