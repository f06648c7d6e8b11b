"""The documentation site: ``mkdocs build --strict`` (no broken link, reference or docstring), every code
block of the pages marked runnable executed as written, and one built page rendered in headless Chromium
(navigation, Material's scripts and an image load, with no network)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# A fenced block right after this comment line is run by test_runnable_block (python or bash).
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```(python|bash)\n(.*?)```", re.S)


def _env() -> dict:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(out)], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return out


def test_site_builds_strict(site):
    assert (site / "index.html").exists() and (site / "search" / "search_index.json").exists()


def _runnable_blocks() -> list[tuple[str, str, str]]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        for i, m in enumerate(RUNNABLE.finditer(page.read_text())):
            blocks.append((f"{page.relative_to(DOCS)}#{i}", m.group(1), m.group(2)))
    return blocks


@pytest.mark.parametrize("where,lang,code", _runnable_blocks() or [pytest.param("", "", "", marks=pytest.mark.skip)],
                         ids=lambda x: x if isinstance(x, str) and ("#" in x) else "")
def test_runnable_block(where, lang, code, tmp_path):
    """Each block runs as written from an empty folder (relative paths land there; shipped files come from
    the package)."""
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)
    assert run.returncode == 0, f"docs/{where} ({lang}) failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


CHECK = """<script>window.addEventListener('load', function () {
  setTimeout(function () {
    var imgs = Array.prototype.slice.call(document.images);
    var out = {images: imgs.length,
               loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
               nav_links: document.querySelectorAll('nav.md-nav a.md-nav__link').length,
               material_js: typeof window.document$ !== 'undefined',
               title: document.title};
    var pre = document.createElement('pre'); pre.id = 'browser-check'; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 500);
});</script>"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test's output is the assertion, not the request log
        pass


def test_a_built_page_renders_in_headless_chromium(site, tmp_path):
    from conftest import chromium, chromium_flags

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    page = site / "index.html"
    checked = site / "browser-check.html"  # beside the page, so its relative assets resolve the same way
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/browser-check.html"
        dom = subprocess.run(chromium_flags(browser, tmp_path / "profile") + ["--dump-dom", url],
                             capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    m = re.search(r"<pre id=\"browser-check\">(.*?)</pre>", dom.stdout)
    assert m, f"the check did not run in the browser (rc {dom.returncode}): {dom.stderr[-2000:]}"
    status = json.loads(m.group(1).replace("&quot;", '"'))
    assert status["material_js"], status  # Material's bundle loaded from the site itself
    assert status["nav_links"] >= 5, status  # the navigation is there
    assert status["images"] >= 1 and status["loaded"] == status["images"], status  # every image decoded
