"""The one home of the checkpoint file names this package reads and writes."""

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
#: The weights of a checkpoint small enough for one file (no index).
SINGLE_FILE = "model.safetensors"
QUANT_FILE = "hf_quant_config.json"
README_FILE = "README.md"
