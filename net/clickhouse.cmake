# SPDX-License-Identifier: Apache-2.0
# The ClickHouse mirror client of net/ (see net/CMakeLists.txt): libcurl
# for the HTTP interface, zlib for the gzip'd INSERT bodies (the gzip
# stream is what makes a cut upload an error rather than a partial insert:
# docs/CLICKHOUSE.md). net/s3.cmake may have found libcurl already.
if(NOT TARGET PkgConfig::CURL)
  pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
endif()
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
target_sources(hodei_net PRIVATE ${CMAKE_CURRENT_LIST_DIR}/clickhouse.c)
target_link_libraries(hodei_net PRIVATE PkgConfig::CURL PkgConfig::ZLIB)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/clickhouse.c PROPERTIES
  COMPILE_DEFINITIONS HODEI_VERSION="${PROJECT_VERSION}")
