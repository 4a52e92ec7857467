# SPDX-License-Identifier: Apache-2.0
# The server binary, kept apart from tools/CMakeLists.txt's CLI targets.
add_executable(hodei-auditd ${CMAKE_CURRENT_LIST_DIR}/hodei-auditd.c)
target_link_libraries(hodei-auditd PRIVATE hodei_net hodei_engine hodei_flags Threads::Threads)
target_compile_definitions(hodei-auditd PRIVATE HODEI_VERSION="${PROJECT_VERSION}")
set_target_properties(hodei-auditd PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tools)
