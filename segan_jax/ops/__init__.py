"""Numerical operations under the models: how their convolutions are computed."""
