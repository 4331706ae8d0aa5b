"""Taking a trained model to a production line: one ONNX graph (export), a torch-free runner (runtime) and
an inspection HTTP service (service). See docs/deploy.md."""
