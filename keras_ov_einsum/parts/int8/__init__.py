"""The opt-in int8 parts: int8 products kept int8, keras's int8 layers
built whole, the plugin's dynamic quantization."""
