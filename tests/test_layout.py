"""The package's architecture: the model never depends on the training recipe."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import torch

from swin_tiny_hf import SwinTinyForImageClassification, save_model_and_processor

from conftest import tiny_config

PACKAGE = Path(__file__).resolve().parent.parent / "swin_tiny_hf"
MODEL_MODULES = sorted(PACKAGE.glob("*.py"))
RECIPE_MODULES = sorted(p.stem for p in (PACKAGE / "training").glob("*.py") if p.stem != "__init__")


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, relative imports written with their dots ('.training.data')."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [base] + [f"{base}.{alias.name}" if node.module else base + alias.name for alias in node.names]
    return names


def test_no_model_module_imports_the_training_package():
    assert {p.stem for p in MODEL_MODULES} >= {"configuration_swin_tiny", "modeling_swin_tiny", "windows", "convert"}
    offenders = {
        path.name: name
        for path in MODEL_MODULES
        for name in imported_modules(path)
        if name.startswith((".training", "swin_tiny_hf.training")) or name.lstrip(".").split(".")[0] == "training"
    }
    assert offenders == {}
    # and at run time: importing the package and every model module leaves the recipe unimported
    modules = ", ".join(f"swin_tiny_hf.{p.stem}" for p in MODEL_MODULES if p.stem != "__init__")
    script = f"import sys, importlib; [importlib.import_module(m) for m in '{modules}'.split(', ')]; " + (
        "print(sorted(m for m in sys.modules if m.startswith('swin_tiny_hf.training')))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_saved_model_folder_holds_the_model_files_only(tmp_path):
    assert "data" in RECIPE_MODULES and "collate" in RECIPE_MODULES  # the recipe lives in training/
    model = SwinTinyForImageClassification(tiny_config())
    save_model_and_processor(model, tmp_path)
    code = {p.stem for p in tmp_path.glob("*.py")}
    assert code == {
        "configuration_swin_tiny",
        "modeling_swin_tiny",
        "windows",
        "image_processing_swin_tiny",  # the processor and the decoder training uses
        "pipeline_swin_tiny",  # a classifier's image-classification pipeline
    }
    assert not code & set(RECIPE_MODULES)
    assert not (tmp_path / "training").exists()
    # and the folder's code is self-contained: its imports stay inside the folder, transformers and torch
    for path in tmp_path.glob("*.py"):
        for name in imported_modules(path):
            root = name.lstrip(".").split(".")[0]
            if name.startswith("."):
                assert root in code, (path.name, name)
            else:
                assert root in {
                    *("__future__", "torch", "transformers", "math", "dataclasses", "difflib", "functools"),
                    *("io", "logging", "os", "numpy", "PIL", "torchcodec", "platform", "re", "sys"),
                }, (
                    path.name,
                    name,
                )
    assert torch.equal(
        SwinTinyForImageClassification.from_pretrained(tmp_path).classifier.weight, model.classifier.weight
    )


def test_the_readme_layout_and_the_recipe_index_name_every_module():
    """A reader finds every module by its name in the README's layout section and the recipe's index."""
    import swin_tiny_hf.training as recipe

    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    index = recipe.__doc__
    missing_from_index = [name for name in RECIPE_MODULES if f"`{name}.py`" not in index]
    missing_from_layout = [
        name
        for name in RECIPE_MODULES + [p.stem for p in MODEL_MODULES if p.stem != "__init__"]
        if f"`{name}.py`" not in layout and f"`{name}.py`" not in layout.replace("(+ its `.tsv`)", "")
    ]
    assert missing_from_index == [] and missing_from_layout == []
    named = set(re.findall(r"`(\w+)\.py`", index)) - {"train"}  # the script the recipe serves
    assert named <= set(RECIPE_MODULES), named - set(RECIPE_MODULES)  # no module the tree no longer has


def test_the_model_card_template_ships_inside_the_package():
    from swin_tiny_hf.training.model_card import DEFAULT_TEMPLATE

    assert DEFAULT_TEMPLATE.is_file() and DEFAULT_TEMPLATE.parent == PACKAGE / "training"
    assert DEFAULT_TEMPLATE.read_text() == (PACKAGE.parent / "model_card.md").read_text()
