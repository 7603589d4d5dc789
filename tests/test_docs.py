"""The documentation: the site builds in strict mode, and every example runs.

Convention (docs/index.md, "Writing docs"):

* a block fenced ```python is executed: all the ```python blocks of one page
  (docs/*.md, and README.md) are joined in order into one script, run by a
  fresh interpreter, which must exit with status 0, write no traceback and
  leave nothing new in /dev/shm;
* a Python fragment not meant to run (a signature, a sketch) is fenced ```py;
* shell commands are fenced ```sh (or ```console), output ```text.

Examples that start processes keep that code under ``if __name__ ==
"__main__":``, so that spawn can import the script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHM_DIR, _someone_elses

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXECUTED = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
PAGES = [page for page in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"] if EXECUTED.search(page.read_text())]


def _shm_entries() -> set[str]:
    return set(os.listdir(SHM_DIR))


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    out = subprocess.run(
        [*command, "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert (site / "index.html").exists() and (site / "api.html").exists()
    # README.md is outside the site: check its links into docs/ against it.
    for target, anchor in re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#([^)\s]+))?\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            html = (site / Path(target).relative_to("docs").with_suffix(".html")).read_text()
            assert f'id="{anchor}"' in html, f"README.md links to {target}#{anchor}, which has no such anchor"


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    missing = [page.name for page in DOCS.glob("*.md") if f": {page.name}" not in config]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_the_examples_of_a_page_run(page: Path, tmp_path: Path) -> None:
    blocks = EXECUTED.findall(page.read_text())
    script = tmp_path / f"{page.stem.replace('-', '_')}_examples.py"  # a file: spawn children import it
    script.write_text("\n\n".join(blocks))
    before = _shm_entries()
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    leaked = sorted(e for e in _shm_entries() - before if not e.startswith("sem.mp-") and not _someone_elses(e))
    for entry in leaked:  # the conftest fixture would fail the test too; leave the machine clean
        try:
            os.unlink(os.path.join(SHM_DIR, entry))
        except FileNotFoundError:
            pass
    assert out.returncode == 0, f"{page.name}'s examples failed ({script}):\n{out.stderr[-4000:]}"
    assert "Traceback" not in out.stderr, f"{page.name}'s examples wrote a traceback:\n{out.stderr[-4000:]}"
    assert not leaked, f"{page.name}'s examples left entries in {SHM_DIR}: {leaked}"
