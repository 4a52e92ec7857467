# SPDX-License-Identifier: Apache-2.0
# The S3 client of net/ (see net/CMakeLists.txt and docs/S3.md): the pure
# request builder (s3_request.c: config, key encoding, digests, multipart
# plan, bounded XML tags) and the libcurl transport (s3.c, the only file of
# the client that includes curl.h). SigV4 is libcurl's CURLOPT_AWS_SIGV4.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
target_sources(hodei_net PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/s3_request.c
  ${CMAKE_CURRENT_LIST_DIR}/s3.c)
target_link_libraries(hodei_net PUBLIC PkgConfig::CURL)
# The version in the user-agent header (hodei-audit/<version>).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/s3.c PROPERTIES
  COMPILE_DEFINITIONS HODEI_VERSION="${PROJECT_VERSION}")
