"""The coverage recorder's copy watch on parameters torch gives no storage to.

It runs inside SGLang's weight loading, so a parameter it cannot map to a storage must be
skipped, never raise: torch's ``UninitializedParameter`` raises ValueError from
``untyped_storage()``. Plain torch modules here: no SGLang class is involved in this step.
"""

from __future__ import annotations

import torch
from torch.nn.parameter import UninitializedParameter

from sglang_glm_mtp.plugin.coverage import _Recorder


def test_a_parameter_without_storage_is_skipped_and_the_others_watched() -> None:
    model = torch.nn.Module()
    model.ready = torch.nn.Parameter(torch.zeros(2))
    model.lazy = UninitializedParameter()
    recorder = _Recorder(model, ("model.layers.4.",))
    with recorder.copy_watch():
        model.ready.data.copy_(torch.ones(2))
    assert recorder.copied == {"ready"}
