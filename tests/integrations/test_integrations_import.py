"""The integrations import lazily and explain how to install a missing framework."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [("llama_index", "llama_index.core", "llama-index"), ("langchain", "langchain_core", "langchain")],
)
def test_missing_framework_says_what_to_install(monkeypatch, module, framework, extra):
    monkeypatch.setitem(sys.modules, framework, None)  # as if not installed
    monkeypatch.delitem(sys.modules, f"tensordb.integrations.{module}", raising=False)
    with pytest.raises(ImportError, match=rf'pip install "tensordb\[{extra}\]"'):
        importlib.import_module(f"tensordb.integrations.{module}")


def test_package_imports_without_frameworks():
    code = (
        "import sys; sys.modules['llama_index.core'] = None; sys.modules['langchain_core'] = None\n"
        "import tensordb.integrations as integrations\n"
        "try:\n    integrations.TensorDB\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "tensordb[langchain]"' in out


def test_lazy_names():
    from tensordb.integrations import TensorDB, TensorDBVectorStore
    from tensordb.integrations.langchain import TensorDB as LangChainTensorDB
    from tensordb.integrations.llama_index import TensorDBVectorStore as LlamaStore

    assert TensorDB is LangChainTensorDB and TensorDBVectorStore is LlamaStore
