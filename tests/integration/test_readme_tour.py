# SPDX-License-Identifier: Apache-2.0
"""The README's five-minute tour works exactly as written: the shell block
after the `<!-- tour: ... -->` marker runs with bash in a fresh folder
(with `build` pointing at the build under test), on free ports instead of
the defaults so that it cannot collide with anything."""
import os
import re
import subprocess

import hodei

README = hodei.ROOT / "README.md"


def tour_script():
    text = README.read_text()
    marker = text.index("<!-- tour:")
    m = re.compile(r"```sh\n(.*?)```", re.S).search(text, marker)
    assert m, "no ```sh block after the tour marker in README.md"
    return m.group(1)


def test_readme_tour_runs_as_written(tmp_path):
    grpc_addr = f"127.0.0.1:{hodei.free_port()}"
    admin_addr = f"127.0.0.1:{hodei.free_port()}"
    script = tour_script()
    assert "127.0.0.1:50051" in script and "127.0.0.1:8080" in script
    script = script.replace("127.0.0.1:50051", grpc_addr).replace("127.0.0.1:8080", admin_addr)
    (tmp_path / "build").symlink_to(hodei.BUILD_DIR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}
    env.update(HODEI_GRPC_LISTEN=grpc_addr, HODEI_ADMIN_LISTEN=admin_addr, HODEI_SERVER=grpc_addr)
    out = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "auditd.log").read_text() if (tmp_path / "auditd.log").exists() else ""
    assert out.returncode == 0, f"tour failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{log}"
    assert "3 accepted, 0 duplicates, seq 1..3" in out.stdout, out.stdout
    assert "0 accepted, 3 duplicates" in out.stdout, out.stdout
    assert "intact: 3 events" in out.stdout, out.stdout
    assert 'hodei_events_appended_total{tenant="acme"} 3' in out.stdout, out.stdout
    assert out.stdout.count('"actor_id":"alice"') == 2
    assert "admin key (shown once): hk_" in (tmp_path / "auditd.out").read_text()
    assert '"msg":"stopped"' in log
