"""The SGLang plugin ``glm_mtp`` (entry point group ``sglang.srt.plugins``)."""


def register() -> None:
    """Entry point called by SGLang's ``load_plugins()`` in every process."""
