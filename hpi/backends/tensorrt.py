"""Native TensorRT engines (placeholder module replaced by the TensorRT implementation)."""
