"""Only one build step beyond pyproject.toml: ship DIRECTOR.md and mappings/ in the wheel.

They live at the top of the tree, where a musician editing a clone finds them; a wheel
(pip, pipx) carries only the package folder, so the build copies them into
``pete_osc/shipped/``. ``pete_osc.shipped`` looks there first, then beside the package.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ["DIRECTOR.md", "mappings"]


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the tree itself
            return
        target = Path(self.build_lib) / "pete_osc" / "shipped"
        for name in SHIPPED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithShipped})
