"""Rewrites of the OpenVINO backend's ops and of the layers' attention and
normalization."""
