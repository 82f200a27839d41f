"""The opt-in ``int4`` part: keras's int4 layers on their 4-bit kernels."""
