"""Networks and what is built from them.

A registry of networks (one module each under ``networks/``), their weights, the ImageNet backbones, the
features+svm method, the trained-model artifact, losses and the ONNX export.
"""
