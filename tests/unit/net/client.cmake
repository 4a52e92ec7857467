# SPDX-License-Identifier: Apache-2.0
# Unit tests of the client side of net/: the JSON form of events
# (net/event_json.c) and the gRPC client (net/grpc_client.c) against a
# scripted nghttp2 peer in a thread. The CLI on top of them is tested end
# to end by tests/integration/test_cli.py against the real server.
hodei_unit_test(test_net_event_json ${CMAKE_CURRENT_LIST_DIR}/test_event_json.c LIBS hodei_net)
hodei_unit_test(test_net_grpc_client ${CMAKE_CURRENT_LIST_DIR}/test_grpc_client.c
  LIBS hodei_net Threads::Threads)
