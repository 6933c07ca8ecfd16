"""Make SGLang's MTP/NextN speculative decoding work, fast and safely, on quantized DeepSeek-style MoE checkpoints."""

__version__ = "0.1.0"
