"""Serving: the runtimes that answer from `.mar` archives: the embedded engine, the TorchServe client and launcher (`serving.factory` picks one)."""
