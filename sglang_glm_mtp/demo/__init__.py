"""``sglang-glm-mtp demo``: the whole problem and its fix, end to end, on a tiny checkpoint, in seconds.

Like ``plugin/``, this package is one of the two doors to SGLang: nothing else in sglang_glm_mtp imports it
(tests/test_plugin_imports.py). Modules:

* ``run``: the six steps (``run_demo``) and the GPU names the demo accepts;
* ``results``: what each step hands to ``on_step`` (dataclasses; ``cli/demo.py`` prints them);
* ``sglang_child``: the parent's side of the SGLang child process (start it, ask it, read its replies);
* ``resolver``: the child itself (``python -m sglang_glm_mtp.demo.resolver``), SGLang's real resolution;
* ``gpu_emulation``: a GPU generation emulated on a machine without one, shared with the tests.

Importing the package imports none of them.
"""
