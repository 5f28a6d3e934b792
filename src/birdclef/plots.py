"""`birdclef plots`: `dvc plots show` as a page that renders offline.

DVC's HTML page loads Vega from a CDN, so without a network it is blank. This command fetches the
three Vega libraries once from the npm registry (`npm pack`, pinned versions, checked by npm against
the registry's integrity hashes) into .plots-vendor/ and passes DVC an HTML template with them
inlined (`dvc plots show --html-template`). The versions are the ones DVC's own page uses.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VENDOR = Path(".plots-vendor")
# package -> (version, file inside the package); DVC 3's page asks the CDN for these versions
LIBRARIES = {
    "vega": ("5.20.2", "package/build/vega.min.js"),
    "vega-lite": ("5.2.0", "package/build/vega-lite.min.js"),
    "vega-embed": ("6.18.2", "package/build/vega-embed.min.js"),
}
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>birdclef-pipeline plots</title>
{libraries}
<style>body {{ font-family: sans-serif; }} table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def library_file(package: str) -> Path:
    version, _ = LIBRARIES[package]
    return VENDOR / f"{package}-{version}.min.js"


def fetch_libraries() -> None:
    """Download the pinned Vega builds with npm, unless they are already in .plots-vendor/."""
    missing = [p for p in LIBRARIES if not library_file(p).is_file()]
    if not missing:
        return
    if shutil.which("npm") is None:
        raise FileNotFoundError("npm is needed once to fetch the Vega libraries (apt install npm)")
    VENDOR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{p}@{LIBRARIES[p][0]}" for p in missing]
        subprocess.run(["npm", "pack", "--silent", *specs], cwd=tmp, check=True,
                       capture_output=True, text=True)
        for package in missing:
            version, member = LIBRARIES[package]
            with tarfile.open(Path(tmp) / f"{package}-{version}.tgz") as archive:
                data = archive.extractfile(member)
                if data is None:
                    raise FileNotFoundError(f"{package}@{version}: {member} not in the package")
                library_file(package).write_bytes(data.read())
    log.info("plots: fetched %s into %s", ", ".join(specs), VENDOR)


def offline_template() -> Path:
    """The HTML template with the libraries inlined."""
    scripts = "\n".join(f"<script>{library_file(p).read_text()}</script>" for p in LIBRARIES)
    path = VENDOR / "page.html"
    path.write_text(PAGE.format(libraries=scripts))
    return path


def cli(args: Any) -> None:
    fetch_libraries()
    command = ["dvc", "plots", "diff" if args.revisions else "show",
               *args.revisions, "--html-template", str(offline_template()), "-o", args.out]
    subprocess.run(command, check=True)
    print(f"plots: {Path(args.out) / 'index.html'} (renders without a network)")
