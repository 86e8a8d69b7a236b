"""Shipping a trained model: the verified ONNX bundle and the tools that write and read it."""
