"""The one home of the checkpoint file names this package reads and writes."""

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
QUANT_FILE = "hf_quant_config.json"
README_FILE = "README.md"
