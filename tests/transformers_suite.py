"""transformers' own common model tests, for the installed transformers version, fetched once and cached.

transformers ships its test mixins (`ModelTesterMixin`, `ConfigTester`, `BackboneTesterMixin`, ...) in its
source distribution on PyPI, not in the wheel. `common_tests()` downloads that sdist for the installed
version (`pip download --no-binary :all:`), keeps the top-level `tests/*.py` as the package
`transformers_common_tests` in a cache folder, and imports it. After the first time it is offline.

Three modules that those files import are not in the sdist; the package gets small stand-ins of our own:
- `exporters/test_export.py`: `ExportTesterMixin`, the base of `ModelTesterMixin`, as an empty mixin (its
  torch.export tests live in transformers' repository only; our export is tested in tests/test_onnx.py);
- `generation/test_utils.py`: `GenerationTesterMixin`, only named in an `issubclass` check (our models do not
  generate);
- `utils/test_configuration_utils.py`: `config_common_kwargs`, one non-default value for each argument that
  every `PreTrainedConfig` takes.

Run as a script (scripts/setup.sh does) to fetch at set-up time: `python tests/transformers_suite.py`.
The cache is `$SWIN_TINY_HF_CACHE` or `~/.cache/swin_tiny_hf`, one folder per transformers version.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "transformers_common_tests"

STAND_INS = {
    "exporters/test_export.py": '''"""Stand-in: transformers' tests/exporters is not in its sdist."""


class ExportTesterMixin:
    pass
''',
    "generation/test_utils.py": '''"""Stand-in: transformers' tests/generation is not in its sdist."""


class GenerationTesterMixin:
    pass
''',
    "utils/test_configuration_utils.py": '''"""Stand-in: transformers' tests/utils is not in its sdist.

A non-default value for each argument that every PreTrainedConfig accepts
(ConfigTester.check_config_arguments_init sets them and reads them back).
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
''',
}


def cache_root() -> Path:
    return Path(os.environ.get("SWIN_TINY_HF_CACHE", Path.home() / ".cache" / "swin_tiny_hf"))


def installed_transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def fetch(version: str, destination: Path) -> None:
    """Download transformers' sdist of `version` and lay out its top-level tests as a package under destination."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"transformers=={version}",
            "-d",
            scratch,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(scratch).glob("transformers-*.tar.gz"))
        if result.returncode or not archives:
            raise RuntimeError(
                f"could not download transformers {version}'s source distribution from PyPI, which holds the common "
                f"model tests ({' '.join(command)}):\n{result.stderr[-2000:]}"
            )
        building = destination.with_name(destination.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        package = building / PACKAGE
        package.mkdir(parents=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts  # transformers-X.Y.Z/tests/<file>.py
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (package / parts[2]).write_bytes(archive.extractfile(member).read())
        if not (package / "test_modeling_common.py").exists():
            raise RuntimeError(f"transformers {version}'s source distribution has no tests/test_modeling_common.py.")
        (package / "__init__.py").write_text("")
        for relative, text in STAND_INS.items():
            path = package / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").touch()
            if not path.exists():  # a later sdist that ships the module keeps its own
                path.write_text(text)
        shutil.rmtree(destination, ignore_errors=True)
        building.rename(destination)  # complete or absent: a kill mid-download leaves only the .partial folder


def suite_folder() -> Path:
    """The cached folder holding `transformers_common_tests` for the installed transformers, fetched if missing."""
    version = installed_transformers_version()
    folder = cache_root() / f"transformers-{version}-tests"
    if not (folder / PACKAGE / "test_modeling_common.py").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        fetch(version, folder)
    return folder


def common_tests():
    """Import and return the `transformers_common_tests` package for the installed transformers."""
    folder = str(suite_folder())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(PACKAGE)


if __name__ == "__main__":
    print(f"transformers {installed_transformers_version()}'s common tests: {suite_folder() / PACKAGE}")
