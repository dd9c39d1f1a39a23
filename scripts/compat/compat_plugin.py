"""pytest plugin that runs llama.cpp's server tests offline with one local model.

Loaded by scripts/compat/server_tests.py as `-p compat_plugin` into a scratch
copy of tools/server/tests; the sdist itself is never edited. It changes the
test setup only, identically for llama-server and vram-llm:

- every ServerPreset that names a Hugging Face model (tinyllama2,
  bert_bge_small, tinygemma3, tinylaya, ...) gets `--model <our model>`
  instead (model_file set, model_hf_repo/model_hf_file cleared);
  the router preset names no model and is left as it is;
- ServerPreset.load_all (conftest's session fixture, which starts every preset
  once to download its model) does nothing.

Tests that set model_hf_repo themselves after taking a preset (a specific
model or chat template from the Hub) are left alone: without a network they
fail on both servers and so never count. The router tests find their models in
the fake Hugging Face cache the harness builds (LLAMA_CACHE, see server_tests.py).
"""

import os

import utils  # the copied tests/utils.py; the harness puts its folder on PYTHONPATH

MODEL = os.environ["COMPAT_MODEL_FILE"]


def _local(preset):
    def make():
        server = preset()
        if server.model_hf_repo or server.model_hf_file or server.model_file or server.model_url:
            server.model_file = MODEL
            server.model_hf_repo = None
            server.model_hf_file = None
            server.model_url = None
        return server

    make.__name__ = preset.__name__
    return staticmethod(make)


def _patch():
    presets = utils.ServerPreset
    for name, member in list(vars(presets).items()):
        if name == "load_all" or not isinstance(member, staticmethod):
            continue
        setattr(presets, name, _local(member.__func__))
    presets.load_all = staticmethod(lambda: None)


_patch()
