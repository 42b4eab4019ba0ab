"""Runtimes that run an exported generator outside PyTorch eager.

onnxruntime.py: OnnxSession (one graph, requests checked against the I/O contract) and
OnnxRuntimeGenerator (the Translator's "onnxruntime" backend). tensorrt.py: EngineRunner (TensorRT
engines, with torch, cuda-python or pycuda buffers). fused.py: FusedGenerator (the Translator's "fused"
backend: folded norms, fused kernels, channels_last, CUDA graphs). Neither of the first two is imported here: each needs optional
packages (onnxruntime; tensorrt and a GPU).
"""
