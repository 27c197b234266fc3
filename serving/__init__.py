"""Serving: the `.mar` handler, the embedded engine, the TorchServe client (`serving.factory` picks one)."""
