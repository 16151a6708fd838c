"""Benchmarks of segan-jax, kept out of the installed package."""
