# SPDX-License-Identifier: Apache-2.0
# The admin HTTP port of net/ (see net/CMakeLists.txt): libmicrohttpd
# routes /metrics, /healthz, /readyz (admin.c, the only file that includes
# microhttpd.h) and the Prometheus text writer, histograms and bounded
# tenant label set (metrics.c). libm: llround() and isnan() in metrics.c.
target_sources(hodei_net PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/admin.c
  ${CMAKE_CURRENT_LIST_DIR}/metrics.c)
target_link_libraries(hodei_net PRIVATE m)
