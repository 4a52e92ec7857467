# SPDX-License-Identifier: Apache-2.0
# Unit test of the S3 client's request builder (net/s3_request.c): key
# encoding, URLs, segment keys, digests, multipart plan, configuration and
# credentials file, bounded XML tags, error kinds. The transport (net/s3.c)
# is tested against moto by tests/integration/test_s3_client.py.
hodei_unit_test(test_net_s3 ${CMAKE_CURRENT_LIST_DIR}/test_s3.c LIBS hodei_net)
