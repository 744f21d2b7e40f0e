"""What generated code runs on: memories and the named kernels over them (`memory`), the chunkwise
math (`chunkwise`), the segment loop every model shares (`model`), the optimizer base (`optimizer`),
and the torch-free facts code generation writes down for each memory (`memspec`)."""
