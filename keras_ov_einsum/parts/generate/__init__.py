"""keras-hub's ``generate()`` as one compiled step model (``stepwise``) and
the passes that shape it: per-layer caches, caches in OpenVINO state,
float16 weights kept float16, masks shared by the layers."""
