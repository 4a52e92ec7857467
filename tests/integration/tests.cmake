# SPDX-License-Identifier: Apache-2.0
#
# Integration suite (DESIGN.md §11): pytest with the official grpcio client
# against the real hodei-auditd of this build tree, on 127.0.0.1 and free
# ports. One CTest test runs the whole suite with the virtual environment
# that scripts/setup.sh makes (.venv/, tests/integration/requirements.txt).
# Without that environment the test reports "skipped" (exit 77) rather than
# failing; scripts/test.sh runs setup.sh first, so in CI it always runs.
set(HODEI_VENV_PYTHON ${PROJECT_SOURCE_DIR}/.venv/bin/python)
add_test(NAME integration_pytest
  COMMAND sh -c "if [ ! -x \"$0\" ]; then echo \"integration_pytest: $0 missing: run scripts/setup.sh --no-run\"; exit 77; fi; exec \"$0\" -m pytest -q tests/integration"
          ${HODEI_VENV_PYTHON}
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(integration_pytest PROPERTIES
  LABELS integration
  TIMEOUT 1200
  SKIP_RETURN_CODE 77
  # hodei-auditd runs 2 shards and the suite starts many servers: alone on
  # the machine's 2 cores, not beside the other long tests.
  RUN_SERIAL TRUE
  ENVIRONMENT "HODEI_BUILD_DIR=${CMAKE_BINARY_DIR};PYTHONDONTWRITEBYTECODE=1")
