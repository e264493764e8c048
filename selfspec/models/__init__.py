"""Getting a model: the embedded default, Hub ids, local folders and GGUF files (including ones shipped
in PyPI chunk packages), and the device/library facts that results record."""
