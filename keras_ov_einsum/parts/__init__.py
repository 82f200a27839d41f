"""The parts, by concern, each one module named after its ``enable()``
switch and ending in its ``PART = Part(...)`` declaration:

- ``ops/``: rewrites of backend ops (einsum, matmul, slice_update,
  prescale, align_types) and of the layers' attention and normalization;
- ``int8/``: the opt-in int8 parts;
- ``loading/``: keras-hub's ``from_preset`` and keras's saving;
- ``generate/``: keras-hub's ``generate()`` as one stateful step model.
"""
